"""The cryptography of the NetsUnion wire (MODELLED on what public samples show, see
docs/netsunion.md §Crypto): SM2 signatures with SM3 (the ``{S:…}`` trailer, DER ``r, s`` as the
observed ``MEUCIF…``), an SM4 session key per message enveloped with SM2 for the recipient
(``DgtlEnvlp``), and the sensitive body fields encrypted under it.

SM2 comes from ``gmalg`` (pure Python, nonces from ``secrets``, ciphertext hash checked, points
validated); SM3 and SM4 from ``cryptography``. Keys travel as standard PEM: PKCS#8 private keys
and SubjectPublicKeyInfo public keys on the curve sm2p256v1 (OID 1.2.156.10197.1.301). Their
DER has one fixed layout for this curve, so they are written and read against that layout.
Pure computation: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

import gmalg
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# GM/T 0009's default signer id, which public SM2 integrations use unchanged
SIGNER_ID = b"1234567812345678"
SM4_KEY_BYTES = 16
POINT_BYTES = 65  # 04 || x || y
SCALAR_BYTES = 32
MAX_SIGNATURE_BYTES = 80  # DER of two 32-byte integers is at most 72
MAX_ENVELOPE_BYTES = 256
MAX_FIELD_CIPHER_BYTES = 512
# DER layouts for sm2p256v1 keys: algorithm id-ecPublicKey with the curve's OID as parameter
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
_PKCS8_PREFIX = bytes.fromhex(
    "308187020100301306072a8648ce3d020106082a811ccf5501822d046d306b0201010420"
)
_PKCS8_MIDDLE = bytes.fromhex("a144034200")
PRIVATE_LABEL = "PRIVATE KEY"
PUBLIC_LABEL = "PUBLIC KEY"


class CryptoError(ValueError):
    """A key, signature, envelope or cipher text that is not what it must be."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: bytes  # the 32-byte scalar
    public: bytes  # 04 || x || y


def generate_keypair() -> KeyPair:
    private, public = gmalg.SM2().generate_keypair()
    return KeyPair(private.rjust(SCALAR_BYTES, b"\0"), public)


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


# --- keys as PEM ------------------------------------------------------------------------------


def private_pem(pair: KeyPair) -> str:
    return _pem(PRIVATE_LABEL, _PKCS8_PREFIX + pair.private + _PKCS8_MIDDLE + pair.public)


def public_pem(public: bytes) -> str:
    return _pem(PUBLIC_LABEL, _SPKI_PREFIX + public)


def load_private(pem: str) -> KeyPair:
    der = _unpem(pem, PRIVATE_LABEL)
    head, rest = der[: len(_PKCS8_PREFIX)], der[len(_PKCS8_PREFIX) :]
    private, middle, public = rest[:SCALAR_BYTES], rest[SCALAR_BYTES:37], rest[37:]
    if head != _PKCS8_PREFIX or middle != _PKCS8_MIDDLE or len(public) != POINT_BYTES:
        raise CryptoError("not an SM2 PKCS#8 private key with its public key")
    checked = _point(public)
    if gmalg.SM2().generate_pk(private) != checked:
        raise CryptoError("the private key does not match its public key")
    return KeyPair(private, checked)


def load_public(pem: str) -> bytes:
    der = _unpem(pem, PUBLIC_LABEL)
    if der[: len(_SPKI_PREFIX)] != _SPKI_PREFIX or len(der) != len(_SPKI_PREFIX) + POINT_BYTES:
        raise CryptoError("not an SM2 public key (SubjectPublicKeyInfo)")
    return _point(der[len(_SPKI_PREFIX) :])


def _point(public: bytes) -> bytes:
    if len(public) != POINT_BYTES or public[0] != 4 or not gmalg.SM2().verify_pk(public):
        raise CryptoError("not a point of the SM2 curve")
    return public


def _pem(label: str, der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def _unpem(pem: str, label: str) -> bytes:
    lines = [line.strip() for line in pem.strip().splitlines()]
    if len(lines) < 3 or lines[0] != f"-----BEGIN {label}-----":
        raise CryptoError(f"not a PEM {label}")
    if lines[-1] != f"-----END {label}-----":
        raise CryptoError(f"not a PEM {label}")
    return b64decode("".join(lines[1:-1]), 512)


def b64decode(text: str, limit: int) -> bytes:
    """Strict base64 (RFC 4648 alphabet, padded), at most ``limit`` decoded bytes."""
    if len(text) > (limit + 2) // 3 * 4:
        raise CryptoError("base64 value too long")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CryptoError("not base64") from exc


# --- signatures (SM2 with SM3, DER r,s) -------------------------------------------------------


def sign(pair: KeyPair, message: bytes) -> str:
    """The base64 DER signature of ``message``, as the ``{S:…}`` trailer carries it."""
    signer = gmalg.SM2(pair.private, SIGNER_ID, pair.public)
    r, s = signer.sign(message)
    der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    return base64.b64encode(der).decode("ascii")


def verify(public: bytes, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64 DER, canonical) is the key's over ``message``."""
    try:
        der = b64decode(signature, MAX_SIGNATURE_BYTES)
        r, s = decode_dss_signature(der)
        if encode_dss_signature(r, s) != der:  # one encoding only: no malleable variants
            return False
        r_bytes, s_bytes = r.to_bytes(SCALAR_BYTES, "big"), s.to_bytes(SCALAR_BYTES, "big")
    except (CryptoError, ValueError, OverflowError):
        return False
    return bool(gmalg.SM2(None, SIGNER_ID, public).verify(message, r_bytes, s_bytes))


# --- the digital envelope and the sensitive fields --------------------------------------------


def new_session_key() -> bytes:
    return secrets.token_bytes(SM4_KEY_BYTES)


def envelope(recipient: bytes, session_key: bytes) -> str:
    """``DgtlEnvlp``: the session key SM2-encrypted for the recipient (C1 || C3 || C2, base64;
    the observed value is the GM/T 0009 DER form of the same parts: MODELLED)."""
    return base64.b64encode(gmalg.SM2(pk=recipient).encrypt(session_key)).decode("ascii")


def open_envelope(pair: KeyPair, text: str) -> bytes:
    try:
        key = gmalg.SM2(pair.private, None, pair.public).decrypt(
            b64decode(text, MAX_ENVELOPE_BYTES)
        )
    except CryptoError:
        raise
    except Exception as exc:  # gmalg's own errors: point off the curve, hash mismatch
        raise CryptoError(f"the envelope does not open: {type(exc).__name__}") from exc
    if len(key) != SM4_KEY_BYTES:
        raise CryptoError("the envelope holds no SM4 key")
    return bytes(key)


def encrypt_field(session_key: bytes, value: str) -> str:
    """A sensitive field: SM4-ECB, PKCS#7, base64 (block sizes as observed: 16/32/48 bytes;
    ECB under a key used for one message only)."""
    padder = padding.PKCS7(128).padder()
    plain = padder.update(value.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.SM4(session_key), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def decrypt_field(session_key: bytes, text: str) -> str:
    data = b64decode(text, MAX_FIELD_CIPHER_BYTES)
    if not data or len(data) % 16:
        raise CryptoError("not SM4 blocks")
    decryptor = Cipher(algorithms.SM4(session_key), modes.ECB()).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return str(plain.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CryptoError("the field does not decrypt") from exc
