"""Identifiers: time-ordered, unique without coordination, carrying the cell number.

Layout of the 26-char body (Crockford base32 of 128 bits): 48 bits of milliseconds since the
epoch, 8 bits of cell, 72 random bits. A prefix names the kind: ``pay_``, ``evt_``, ``vch_``...
Any component can read the cell back with :func:`cell_of` to route a request (单元化).
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BODY_LEN = 26
MAX_CELL = 255


def new_id(prefix: str, cell: int = 0, now_ms: int | None = None) -> str:
    assert 0 <= cell <= MAX_CELL
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | (cell << 72) | secrets.randbits(72)
    chars = []
    for _ in range(_BODY_LEN):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return f"{prefix}_{''.join(reversed(chars))}"


def _decode(body: str) -> int:
    value = 0
    for ch in body:
        value = value * 32 + _ALPHABET.index(ch)
    return value


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` has the shape of an id of this kind (``pay_`` + 26 base32 characters):
    anything else names nothing and need not be looked up."""
    head, sep, body = value.partition("_")
    return (
        head == prefix
        and bool(sep)
        and len(body) == _BODY_LEN
        and all(c in _ALPHABET for c in body)
    )


def cell_of(identifier: str) -> int:
    body = identifier.rsplit("_", 1)[-1]
    if len(body) != _BODY_LEN or any(c not in _ALPHABET for c in body):
        raise ValueError(f"not a paygrid id: {identifier!r}")
    return (_decode(body) >> 72) & 0xFF


def timestamp_ms_of(identifier: str) -> int:
    return _decode(identifier.rsplit("_", 1)[-1]) >> 80
