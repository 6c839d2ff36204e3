"""Operations: invariant checks across contexts (`paygrid check`)."""
