"""The sealing of merchant secrets: AES-256-GCM under the KEK, bound to merchant, key and KEK."""

from __future__ import annotations

import base64
import os

import pytest

from paygrid.merchants.vault import (
    KEK_BYTES,
    NONCE_BYTES,
    Sealed,
    Vault,
    VaultError,
    kek_id_of,
    new_kek_text,
    parse_kek,
)

SECRET = "s3cr3t-" + "x" * 36


def test_seal_opens_only_for_its_merchant_and_key() -> None:
    vault = Vault(os.urandom(KEK_BYTES))
    sealed = vault.seal("m1", "key_a", SECRET)
    assert vault.open("m1", "key_a", sealed) == SECRET
    assert SECRET.encode() not in base64.b64decode(sealed.blob)
    for mchid, key_id in (("m2", "key_a"), ("m1", "key_b")):  # a row copied elsewhere
        with pytest.raises(VaultError, match="does not open"):
            vault.open(mchid, key_id, sealed)


def test_every_seal_has_its_own_nonce() -> None:
    vault = Vault(os.urandom(KEK_BYTES))
    blobs = {base64.b64decode(vault.seal("m1", "key_a", SECRET).blob) for _ in range(50)}
    assert len({b[:NONCE_BYTES] for b in blobs}) == 50


def test_tampered_ciphertext_and_another_kek_are_refused() -> None:
    vault = Vault(os.urandom(KEK_BYTES))
    sealed = vault.seal("m1", "key_a", SECRET)
    raw = bytearray(base64.b64decode(sealed.blob))
    raw[-1] ^= 1
    with pytest.raises(VaultError, match="does not open"):
        vault.open("m1", "key_a", Sealed(sealed.kek_id, base64.b64encode(raw).decode()))
    other = Vault(os.urandom(KEK_BYTES))
    assert other.kek_id != vault.kek_id
    with pytest.raises(VaultError, match="sealed under"):
        other.open("m1", "key_a", sealed)
    # A forged KEK id does not make a foreign KEK open it either.
    with pytest.raises(VaultError, match="does not open"):
        other.open("m1", "key_a", Sealed(other.kek_id, sealed.blob))


def test_kek_text_is_base64_of_32_bytes() -> None:
    text = new_kek_text()
    assert kek_id_of(parse_kek(text, "t")) == Vault(parse_kek(text, "t")).kek_id
    for bad in ("", "not base64!", base64.b64encode(b"k" * 16).decode()):
        with pytest.raises(VaultError):
            parse_kek(bad, "PAYGRID_KEK")
