"""Merchant secrets at rest: sealed with AES-256-GCM under a key-encryption key (KEK).

Each secret gets its own random 96-bit nonce; the associated data binds the ciphertext to its
merchant, its key id and the KEK that sealed it, so a sealed value copied onto another key row
does not open. The KEK's id (a fingerprint, not the key) is stored beside each ciphertext, so
the KEK itself can be rotated later and a wrong KEK is named, not guessed at. The HMAC check of
every request needs the plain secret: it is opened on lookup (about 5 µs per request measured,
against some 700 µs for reading the key row, so nothing is cached), never written anywhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEK_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, random per secret
_AAD_PREFIX = b"paygrid merchant secret v1"
_KEK_ID_PREFIX = b"paygrid kek id v1"


class VaultError(Exception):
    """A KEK that cannot be used, or a sealed secret that does not open under it."""


@dataclass(frozen=True, slots=True)
class Sealed:
    kek_id: str
    blob: str  # base64(nonce || AES-GCM ciphertext and tag)


def kek_id_of(kek: bytes) -> str:
    """A stable public name for a KEK (a one-way fingerprint of it)."""
    return "kek_" + hashlib.sha256(_KEK_ID_PREFIX + kek).hexdigest()[:16]


def parse_kek(text: str, source: str) -> bytes:
    """A KEK is written as base64 of 32 random bytes (``paygrid`` generates one so)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VaultError(f"{source}: the KEK must be base64 of {KEK_BYTES} bytes") from None
    if len(raw) != KEK_BYTES:
        raise VaultError(f"{source}: the KEK must be {KEK_BYTES} bytes, not {len(raw)}")
    return raw


def new_kek_text() -> str:
    return base64.b64encode(os.urandom(KEK_BYTES)).decode()


def _aad(kek_id: str, mchid: str, key_id: str) -> bytes:
    return b"\0".join((_AAD_PREFIX, kek_id.encode(), mchid.encode(), key_id.encode()))


class Vault:
    """Seals and opens merchant secrets under one KEK."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEK_BYTES:
            raise VaultError(f"the KEK must be {KEK_BYTES} bytes")
        self.kek_id = kek_id_of(kek)
        self._aead = AESGCM(kek)

    def seal(self, mchid: str, key_id: str, secret: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), _aad(self.kek_id, mchid, key_id))
        return Sealed(self.kek_id, base64.b64encode(nonce + sealed).decode())

    def open(self, mchid: str, key_id: str, sealed: Sealed) -> str:
        if sealed.kek_id != self.kek_id:
            raise VaultError(
                f"the secret of key {key_id} is sealed under {sealed.kek_id}, "
                f"the configured KEK is {self.kek_id}"
            )
        raw = base64.b64decode(sealed.blob)
        try:
            plain = self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(sealed.kek_id, mchid, key_id)
            )
        except InvalidTag:
            raise VaultError(
                f"the secret of key {key_id} does not open: altered, or not this key's"
            ) from None
        return plain.decode()
