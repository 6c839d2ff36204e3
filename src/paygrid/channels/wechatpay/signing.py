"""WeChat Pay API v3 signatures (签名/验签) and AEAD_AES_256_GCM (回调/平台证书解密).

Domain-level: only ``cryptography`` and the standard library.

- Request (商户 → 微信支付): ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,
  signature=…,timestamp=…,serial_no=…`` over ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``.
- Response and callback (微信支付 → 商户): ``Wechatpay-Timestamp/Nonce/Signature/Serial`` over
  ``TIMESTAMP\\nNONCE\\nBODY\\n``.
- Both are RSA PKCS#1 v1.5 with SHA-256, base64.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
AEAD_ALGORITHM = "AEAD_AES_256_GCM"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"  # probes WeChat sends to check merchants verify (签名探测)
MAX_SKEW_SECONDS = 300

HEADER_TIMESTAMP = "Wechatpay-Timestamp"
HEADER_NONCE = "Wechatpay-Nonce"
HEADER_SIGNATURE = "Wechatpay-Signature"
HEADER_SERIAL = "Wechatpay-Serial"
HEADER_SIGNATURE_TYPE = "Wechatpay-Signature-Type"

_NONCE_ALPHABET = string.ascii_letters + string.digits
_AUTH_FIELD_RE = re.compile(r'(\w+)="([^"]*)"')
_AUTH_FIELDS = ("mchid", "nonce_str", "signature", "timestamp", "serial_no")


class SignatureError(Exception):
    """A signature, its headers or its timestamp does not verify (验签失败)."""


class DecryptError(Exception):
    """AEAD_AES_256_GCM ciphertext does not decrypt under the APIv3 key (解密失败)."""


# --- keys -------------------------------------------------------------------------------------


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """The merchant API private key (商户API私钥, apiclient_key.pem) or a platform key."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("expected an RSA private key")
    return key


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """The WeChat Pay public key (微信支付公钥, pub_key.pem)."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("expected an RSA public key")
    return key


def new_nonce(length: int = 32) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def rsa_sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def rsa_verify(public_key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def check_skew(timestamp: str, now: float | None = None, max_skew: int = MAX_SKEW_SECONDS) -> None:
    """Reject a timestamp that is not integer seconds within ``max_skew`` of now (防重放)."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureError(f"bad timestamp {timestamp[:20]!r}")  # 400 digits overflow a float
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > max_skew:
        raise SignatureError("timestamp outside the allowed window")


# --- request Authorization (请求签名) -----------------------------------------------------------


def request_message(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    head = f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


@dataclass(frozen=True, slots=True)
class Authorization:
    mchid: str
    nonce_str: str
    signature: str
    timestamp: str
    serial_no: str


def build_authorization(
    method: str,
    path: str,
    body: bytes,
    *,
    mchid: str,
    serial_no: str,
    private_key: rsa.RSAPrivateKey,
    timestamp: str | None = None,
    nonce: str | None = None,
) -> str:
    """The ``Authorization`` header; ``path`` is path plus ``?query`` exactly as sent."""
    ts = timestamp or str(int(time.time()))
    nonce_str = nonce or new_nonce()
    signature = rsa_sign(private_key, request_message(method, path, ts, nonce_str, body))
    return (
        f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce_str}",signature="{signature}",'
        f'timestamp="{ts}",serial_no="{serial_no}"'
    )


def parse_authorization(header: str) -> Authorization:
    schema, _, rest = header.strip().partition(" ")
    if schema != SCHEMA:
        raise SignatureError("Authorization schema is not " + SCHEMA)
    fields = dict(_AUTH_FIELD_RE.findall(rest))
    missing = [name for name in _AUTH_FIELDS if not fields.get(name)]
    if missing:
        raise SignatureError("Authorization lacks " + ", ".join(missing))
    return Authorization(**{name: fields[name] for name in _AUTH_FIELDS})


def verify_authorization(
    header: str,
    method: str,
    path: str,
    body: bytes,
    public_key: rsa.RSAPublicKey,
    now: float | None = None,
) -> Authorization:
    """Check a merchant request; the caller checks ``mchid``/``serial_no`` belong to the key."""
    auth = parse_authorization(header)
    check_skew(auth.timestamp, now)
    message = request_message(method, path, auth.timestamp, auth.nonce_str, body)
    if not rsa_verify(public_key, message, auth.signature):
        raise SignatureError("signature does not match the request")
    return auth


# --- response and callback signatures (应答/回调签名) -------------------------------------------


def response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign_response(
    body: bytes,
    private_key: rsa.RSAPrivateKey,
    serial: str,
    timestamp: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``Wechatpay-*`` headers for a response or callback body."""
    ts = timestamp or str(int(time.time()))
    nonce_value = nonce or new_nonce()
    return {
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce_value,
        HEADER_SIGNATURE: rsa_sign(private_key, response_message(ts, nonce_value, body)),
        HEADER_SERIAL: serial,
        HEADER_SIGNATURE_TYPE: SCHEMA,
    }


KeyLookup = Callable[[str], "rsa.RSAPublicKey | None"]


def verify_response(
    headers: Mapping[str, str],
    body: bytes,
    key_for_serial: KeyLookup,
    now: float | None = None,
) -> str:
    """Verify ``Wechatpay-*`` headers over ``body``; return the serial that signed it.

    ``key_for_serial`` maps a ``Wechatpay-Serial`` (platform certificate serial or
    ``PUB_KEY_ID_…``) to the key, or None when unknown.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    signature = lower.get(HEADER_SIGNATURE.lower(), "")
    timestamp = lower.get(HEADER_TIMESTAMP.lower(), "")
    nonce = lower.get(HEADER_NONCE.lower(), "")
    serial = lower.get(HEADER_SERIAL.lower(), "")
    if not (signature and timestamp and nonce and serial):
        raise SignatureError("missing Wechatpay signature headers")
    if signature.startswith(SIGNTEST_PREFIX):
        raise SignatureError("signature probe (WECHATPAY/SIGNTEST)")
    signature_type = lower.get(HEADER_SIGNATURE_TYPE.lower(), SCHEMA)
    if signature_type != SCHEMA:
        raise SignatureError(f"unsupported signature type {signature_type!r}")
    check_skew(timestamp, now)
    key = key_for_serial(serial)
    if key is None:
        raise SignatureError(f"unknown Wechatpay-Serial {serial!r}")
    if not rsa_verify(key, response_message(timestamp, nonce, body), signature):
        raise SignatureError("signature does not match the body")
    return serial


# --- AEAD_AES_256_GCM (回调报文与平台证书加密) ---------------------------------------------------


def _aesgcm(apiv3_key: str) -> AESGCM:
    key = apiv3_key.encode("utf-8")
    if len(key) != 32:
        raise ValueError("the APIv3 key (APIv3密钥) must be 32 bytes")
    return AESGCM(key)


def aead_encrypt(
    apiv3_key: str, plaintext: str, associated_data: str, nonce: str | None = None
) -> dict[str, str]:
    """Encrypt to a WeChat ``resource`` object (algorithm, ciphertext, nonce, associated_data)."""
    nonce_value = nonce or new_nonce(12)
    sealed = _aesgcm(apiv3_key).encrypt(
        nonce_value.encode("utf-8"), plaintext.encode("utf-8"), associated_data.encode("utf-8")
    )
    return {
        "algorithm": AEAD_ALGORITHM,
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
        "nonce": nonce_value,
        "associated_data": associated_data,
    }


def aead_decrypt(apiv3_key: str, nonce: str, ciphertext: str, associated_data: str) -> str:
    try:
        sealed = base64.b64decode(ciphertext, validate=True)
        plain = _aesgcm(apiv3_key).decrypt(
            nonce.encode("utf-8"), sealed, associated_data.encode("utf-8")
        )
        return plain.decode("utf-8")
    except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise DecryptError("resource does not decrypt under the APIv3 key") from exc
