"""Sandbox-generated Alipay credentials (应用公私钥, 支付宝公钥, APPID, PID).

Created on the sandbox's first start and kept as JSON under its data directory, so a restarted
sandbox keeps accepting the same app. Domain-level: only ``cryptography`` and stdlib.

Two views: :meth:`SandboxCredentials.merchant_view` is what a merchant gets from the Alipay open
platform (开放平台) and its own key tool; :class:`SandboxCredentials` also holds the Alipay
private key, which only the sandbox has.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid.channels.alipay.signing import private_pem, public_pem

CREDENTIALS_FILE = "alipay-credentials.json"
DEFAULT_PORT = 8102
GATEWAY_PATH = "/gateway.do"

MERCHANT_KEYS = (
    "app_id",
    "app_private_key",
    "app_public_key",
    "alipay_public_key",
    "seller_id",
    "pid",
    "sign_type",
    "charset",
)


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    app_id: str  # APPID, 16 digits
    seller_id: str  # the merchant's PID (合作伙伴身份), 2088 + 12 digits
    app_private_key: str  # 应用私钥, PKCS#8 PEM: the merchant signs requests with it
    app_public_key: str  # 应用公钥, uploaded to Alipay: the sandbox verifies with it
    alipay_public_key: str  # 支付宝公钥: the merchant verifies answers and notifies with it
    alipay_private_key: str  # its private half: only the sandbox has it

    def merchant_view(self, gateway_url: str | None = None) -> dict[str, str]:
        """What a merchant holds; ``gateway_url`` added when given."""
        values = {**asdict(self), "pid": self.seller_id, "sign_type": "RSA2", "charset": "utf-8"}
        view = {key: values[key] for key in MERCHANT_KEYS}
        if gateway_url is not None:
            view["gateway_url"] = gateway_url
        return view


def gateway_url(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}{GATEWAY_PATH}"


def load_or_create_credentials(data_dir: Path, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The merchant's credentials for the sandbox in ``data_dir``, generated on first use."""
    return load_or_create_sandbox_credentials(data_dir).merchant_view(gateway_url(port=port))


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


def generate_credentials() -> SandboxCredentials:
    app_key = _new_key()
    alipay_key = _new_key()
    return SandboxCredentials(
        app_id=f"2021{secrets.randbelow(10**12):012d}",
        seller_id=f"2088{secrets.randbelow(10**12):012d}",
        app_private_key=private_pem(app_key),
        app_public_key=public_pem(app_key.public_key()),
        alipay_public_key=public_pem(alipay_key.public_key()),
        alipay_private_key=private_pem(alipay_key),
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
