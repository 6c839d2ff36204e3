"""Shared kernel: money, identifiers, clock. No framework or driver imports."""
