"""UnionPay ACP 5.1.0 signatures (全渠道 签名/验签), signMethod ``01``: certificate-based RSA.

Domain-level: only ``cryptography`` and the standard library.

- **Sign** (formats/unionpay.md §3): every field except ``signature``, sorted by key (ASCII),
  joined ``k=v`` with ``&``, values not URL-encoded; ``h`` = lower-case hex SHA-256 of that
  string (UTF-8); ``signature`` = base64(SHA256withRSA over the 64 ASCII characters of ``h``),
  PKCS#1 v1.5. A request leaves its blank fields out before signing (as the official demos
  send them); ``certId`` is the *decimal* serial number of the merchant's signing certificate.
- **Verify** a response or notification: over every field received except ``signature``
  (blank ones, ``certId`` and ``signPubKeyCert`` included), with the public key of the
  certificate in ``signPubKeyCert``, once that certificate is shown to be UnionPay's
  (:class:`CertVerifier`).
- **CN rule** (picked and documented, docs/unionpay.md): the UnionPay signing certificate's
  subject CN is ``@``-separated and its third part must be ``中国银联股份有限公司`` — the
  production rule of the official SDKs. The sandbox issues its certificate in that shape, so
  the rule is always on; a merchant of UnionPay's own test environment (whose certificates
  carry ``00040000:SIGN`` there) turns it off with ``validate_cn_name`` false, as the SDKs'
  ``acpsdk.ifValidateCNName=false``.
- **Responses** of the back-end gateway are ``k=v&k=v`` text, not URL-encoded; a value may
  hold ``&`` and ``=`` inside ``{…}`` (:func:`parse_kv`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

VERSION = "5.1.0"
SIGN_METHOD = "01"  # RSA with the merchant's certificate (11/12: SHA-256/SM3 with a key)
ENCODING = "UTF-8"
UNIONPAY_CN = "中国银联股份有限公司"
CN_PART = 2  # the third "@"-separated part of the signing certificate's CN
MAX_SIGNATURE_CHARS = 1024  # RSA-4096 is 684 base64 characters
MAX_CERT_CHARS = 8192
MAX_KV_FIELDS = 200
MAX_KV_DEPTH = 8
CERT_CACHE_SIZE = 16  # verified signPubKeyCert PEMs (UnionPay rotates them rarely)


class SignatureError(Exception):
    """A signature, a certificate or the text they cover does not verify (验签失败)."""


# --- keys and certificates ------------------------------------------------------------------


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.strip().encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("expected an RSA private key")
    return key


def load_cert(pem: str) -> x509.Certificate:
    if len(pem) > MAX_CERT_CHARS:
        raise ValueError("certificate too long")
    return x509.load_pem_x509_certificate(pem.strip().encode("ascii"))


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def cert_id(cert: x509.Certificate) -> str:
    """``certId``: the certificate's serial number in decimal, as the SDKs send it."""
    return str(cert.serial_number)


def rsa_public_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("the certificate's key is not RSA")
    return key


# --- sign and verify ------------------------------------------------------------------------


def sign_content(fields: Mapping[str, str]) -> str:
    """``k=v&…`` over every field but ``signature``, sorted by key."""
    return "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")


def digest_hex(fields: Mapping[str, str]) -> str:
    """The lower-case hex SHA-256 of :func:`sign_content`: what the RSA signature covers."""
    return hashlib.sha256(sign_content(fields).encode("utf-8")).hexdigest()


def sign(fields: Mapping[str, str], key: rsa.RSAPrivateKey) -> str:
    raw = key.sign(digest_hex(fields).encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def sign_request(
    fields: Mapping[str, str], key: rsa.RSAPrivateKey, signer_cert_id: str
) -> dict[str, str]:
    """``fields`` with blank values left out, ``certId`` and ``signMethod`` set, signed."""
    kept = {k: v for k, v in fields.items() if v and k != "signature"}
    kept.update(certId=signer_cert_id, signMethod=SIGN_METHOD)
    return {**kept, "signature": sign(kept, key)}


def sign_answer(
    fields: Mapping[str, str], key: rsa.RSAPrivateKey, signer_pem: str
) -> dict[str, str]:
    """What UnionPay does to a response or notification: ``signPubKeyCert`` added, signed over
    every field (blank ones too)."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    unsigned.update(signMethod=SIGN_METHOD, signPubKeyCert=signer_pem)
    return {**unsigned, "signature": sign(unsigned, key)}


def verify(fields: Mapping[str, str], public_key: rsa.RSAPublicKey) -> bool:
    signature = fields.get("signature", "")
    if not signature or len(signature) > MAX_SIGNATURE_CHARS:
        return False
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
        public_key.verify(
            raw, digest_hex(fields).encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class CertVerifier:
    """Verifies UnionPay's answers: ``signPubKeyCert`` must chain to the root and intermediate
    certificates the merchant downloaded (acp_prod_root.cer / acp_prod_middle.cer), be valid
    now, carry the CN rule (module docstring); then its key must verify ``signature``.
    Thread-safe; verified certificates are cached by their PEM text."""

    def __init__(self, root_pem: str, middle_pem: str, *, validate_cn_name: bool = True) -> None:
        self._root = load_cert(root_pem)
        self._middle = load_cert(middle_pem)
        self._validate_cn = validate_cn_name
        try:
            self._middle.verify_directly_issued_by(self._root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ValueError("the intermediate certificate is not issued by the root") from exc
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()

    def signer(self, pem: str, now: datetime | None = None) -> rsa.RSAPublicKey:
        """The public key of UnionPay's signing certificate ``pem``; SignatureError otherwise."""
        at = now or datetime.now(UTC)
        with self._lock:
            cert = self._cache.get(pem)
            if cert is not None:
                self._cache.move_to_end(pem)
        if cert is None:
            cert = self._checked(pem)
            with self._lock:
                self._cache[pem] = cert
                while len(self._cache) > CERT_CACHE_SIZE:
                    self._cache.popitem(last=False)
        for link in (cert, self._middle, self._root):
            if not link.not_valid_before_utc <= at <= link.not_valid_after_utc:
                raise SignatureError("signPubKeyCert (or its chain) is not valid now")
        return rsa_public_key(cert)

    def _checked(self, pem: str) -> x509.Certificate:
        try:
            cert = load_cert(pem)
        except ValueError as exc:
            raise SignatureError("signPubKeyCert is not a PEM certificate") from exc
        try:
            cert.verify_directly_issued_by(self._middle)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise SignatureError("signPubKeyCert is not issued by UnionPay's chain") from exc
        if self._validate_cn and cn_part(cert) != UNIONPAY_CN:
            raise SignatureError("signPubKeyCert's CN does not name 中国银联股份有限公司")
        return cert

    def verify(self, fields: Mapping[str, str], now: datetime | None = None) -> None:
        """SignatureError unless ``fields`` are signed by UnionPay (signMethod 01, 5.1.0)."""
        if fields.get("signMethod") != SIGN_METHOD:
            raise SignatureError(f"signMethod {fields.get('signMethod', '')[:4]!r} is not 01")
        pem = fields.get("signPubKeyCert", "")
        if not pem:
            raise SignatureError("no signPubKeyCert")
        if not verify(fields, self.signer(pem, now)):
            raise SignatureError("signature does not verify")


def cn_part(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    parts = str(names[0].value).split("@")
    return parts[CN_PART] if len(parts) > CN_PART else None


# --- the k=v answer -------------------------------------------------------------------------


def parse_kv(text: str) -> dict[str, str]:
    """``k=v&k=v`` as UnionPay answers: a value runs to the next ``&`` outside braces, so
    ``reserved={a=1&b=2}`` is one field; values are not URL-decoded. ValueError on an empty
    key, a pair without ``=``, a name twice, unbalanced braces or too many fields."""
    fields: dict[str, str] = {}
    if not text:
        return fields
    start = depth = 0
    pairs: list[str] = []
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
            if depth > MAX_KV_DEPTH:
                raise ValueError("braces nested too deep")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"a '}}' without its '{{' at {index}")
        elif char == "&" and depth == 0:
            pairs.append(text[start:index])
            start = index + 1
        if len(pairs) > MAX_KV_FIELDS:
            raise ValueError("too many fields")
    if depth:
        raise ValueError("a '{' is never closed")
    pairs.append(text[start:])
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key or not sep:
            raise ValueError(f"not a k=v pair: {pair[:40]!r}")
        if key in fields:
            raise ValueError(f"{key[:40]!r} appears twice")
        fields[key] = value
    return fields


def format_kv(fields: Mapping[str, str]) -> str:
    """The answer text: ``k=v`` joined with ``&``, as the gateway writes it (not encoded)."""
    return "&".join(f"{k}={v}" for k, v in fields.items())
