"""Sandbox-generated WeChat Pay credentials (商户API证书, APIv3密钥, 平台证书, 微信支付公钥).

Created on the sandbox's first start and kept as JSON under its data directory, so a restarted
sandbox keeps accepting the same merchant. Domain-level: only ``cryptography`` and stdlib.

Two views: :func:`load_or_create_credentials` returns what a merchant downloads from the merchant
platform (named like wechatpayv3's parameters); :class:`SandboxCredentials` also holds the
sandbox's own secrets (platform private keys) and is for the sandbox alone.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CREDENTIALS_FILE = "wechatpay-credentials.json"
CERT_VALIDITY = timedelta(days=5 * 365)  # platform certificates are valid five years

MERCHANT_KEYS = (
    "mchid",
    "appid",
    "private_key",
    "cert_serial_no",
    "apiv3_key",
    "public_key",
    "public_key_id",
    "platform_cert_serial_no",
)


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    mchid: str
    appid: str
    private_key: str  # merchant API private key (商户API私钥)
    merchant_cert: str  # merchant API certificate (商户API证书), the sandbox verifies with it
    cert_serial_no: str
    apiv3_key: str
    public_key: str  # WeChat Pay public key (微信支付公钥)
    public_key_private: str  # its private half: only the sandbox has it
    public_key_id: str
    platform_cert: str  # platform certificate (平台证书)
    platform_private_key: str
    platform_cert_serial_no: str

    def merchant_view(self) -> dict[str, str]:
        """What a merchant downloads from the merchant platform (商户平台)."""
        values = asdict(self)
        return {key: values[key] for key in MERCHANT_KEYS}


def load_or_create_credentials(data_dir: Path) -> dict[str, str]:
    """The merchant's credentials for the sandbox in ``data_dir``, generated on first use."""
    return load_or_create_sandbox_credentials(data_dir).merchant_view()


def load_or_create_sandbox_credentials(data_dir: Path) -> SandboxCredentials:
    path = data_dir / CREDENTIALS_FILE
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_once(path, json.dumps(asdict(generate_credentials()), indent=2))
    values = json.loads(path.read_text(encoding="utf-8"))
    return SandboxCredentials(**values)


def _write_once(path: Path, text: str) -> None:
    """Create ``path`` atomically unless it exists: two first starts keep one set of keys."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def generate_credentials(now: datetime | None = None) -> SandboxCredentials:
    start = (now or datetime.now(UTC)) - timedelta(days=1)
    mchid = "19" + "".join(secrets.choice(string.digits) for _ in range(8))
    merchant_key = _new_key()
    merchant_cert, merchant_serial = _certificate(merchant_key, mchid, "商户API证书", start)
    platform_key = _new_key()
    platform_cert, platform_serial = _certificate(platform_key, mchid, "平台证书", start)
    public_key_private = _new_key()
    return SandboxCredentials(
        mchid=mchid,
        appid="wx" + secrets.token_hex(8),
        private_key=_private_pem(merchant_key),
        merchant_cert=merchant_cert,
        cert_serial_no=merchant_serial,
        apiv3_key="".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32)),
        public_key=_public_pem(public_key_private.public_key()),
        public_key_private=_private_pem(public_key_private),
        public_key_id=f"PUB_KEY_ID_01{mchid}{start:%Y%m%d}{secrets.randbelow(10**8):08d}",
        platform_cert=platform_cert,
        platform_private_key=_private_pem(platform_key),
        platform_cert_serial_no=platform_serial,
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _serial() -> int:
    """40 hex digits like a real serial, positive and below 2**159 as X.509 requires."""
    return int.from_bytes(bytes([0x10 + secrets.randbelow(0x70)]) + secrets.token_bytes(19))


def _certificate(key: rsa.RSAPrivateKey, mchid: str, unit: str, start: datetime) -> tuple[str, str]:
    """A certificate issued by a sandbox CA stand-in; returns (PEM, uppercase hex serial)."""
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paygrid sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Sandbox CA"),
        ]
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, mchid),
        ]
    )
    serial = _serial()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + CERT_VALIDITY)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return pem, f"{serial:040X}"
