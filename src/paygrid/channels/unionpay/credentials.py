"""Sandbox-generated UnionPay credentials (商户号, 签名证书, 银联根证书/中级证书).

Created on the sandbox's first start and kept as JSON under its data directory, so a restarted
sandbox keeps accepting the same merchant. Domain-level: only ``cryptography`` and stdlib.

Two views: :meth:`SandboxCredentials.merchant_view` is what a merchant gets from UnionPay's
merchant service platform (商户服务平台): its ``merId``, its signing key and certificate
(``certId`` = the certificate's serial in decimal; also as the .pfx UnionPay hands out, at
``GET /sandbox/certs/merchant.pfx``), UnionPay's root and intermediate certificates to verify
``signPubKeyCert`` with, and the gateway URLs. :class:`SandboxCredentials` also holds
UnionPay's signing key, which only the sandbox has.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from paygrid.channels.unionpay import pki
from paygrid.channels.unionpay.signing import SIGN_METHOD, VERSION, cert_id, load_cert

CREDENTIALS_FILE = "unionpay-credentials.json"
DEFAULT_PORT = 8103
FRONT_PATH = "/gateway/api/frontTransReq.do"
BACK_PATH = "/gateway/api/backTransReq.do"
QUERY_PATH = "/gateway/api/queryTrans.do"
FILE_PATH = "/gateway/api/fileTransReq.do"  # real: filedownload.95516.com (host unverified)
PFX_PASSWORD = "000000"  # the password UnionPay's test certificates come with
MER_ID_PREFIX = "777290058"  # the shape of UnionPay's test merchant numbers (15 digits)

MERCHANT_KEYS = (
    "mer_id",
    "cert_id",
    "sign_private_key",
    "sign_cert",
    "root_cert",
    "middle_cert",
    "pfx_password",
    "version",
    "sign_method",
    "validate_cn_name",
)


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    mer_id: str  # 商户代码, 15 digits
    sign_private_key: str  # 商户签名私钥, PKCS#8 PEM (inside the .pfx for a real merchant)
    sign_cert: str  # 商户签名证书 PEM: the sandbox checks certId and signatures with it
    root_cert: str  # 银联根证书 (acp_prod_root.cer)
    middle_cert: str  # 银联中级证书 (acp_prod_middle.cer)
    unionpay_sign_cert: str  # UnionPay's signing certificate: signPubKeyCert in its answers
    unionpay_sign_key: str  # its private half: only the sandbox has it

    @property
    def cert_id(self) -> str:
        return cert_id(load_cert(self.sign_cert))

    def merchant_view(self, base_url: str | None = None) -> dict[str, str]:
        """What a merchant holds; the gateway URLs when ``base_url`` is given."""
        values = {
            **asdict(self),
            "cert_id": self.cert_id,
            "pfx_password": PFX_PASSWORD,
            "version": VERSION,
            "sign_method": SIGN_METHOD,
            "validate_cn_name": "true",
        }
        view = {key: values[key] for key in MERCHANT_KEYS}
        if base_url is not None:
            view.update(gateway_urls(base_url))
        return view


def gateway_urls(base_url: str) -> dict[str, str]:
    base = base_url.rstrip("/")
    return {
        "base_url": base,
        "front_trans_url": base + FRONT_PATH,
        "back_trans_url": base + BACK_PATH,
        "single_query_url": base + QUERY_PATH,
        "file_trans_url": base + FILE_PATH,
    }


def load_or_create_credentials(data_dir: Path, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The merchant's credentials for the sandbox in ``data_dir``, generated on first use."""
    creds = load_or_create_sandbox_credentials(data_dir)
    return creds.merchant_view(f"http://127.0.0.1:{port}")


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
    mer_id = f"{MER_ID_PREFIX}{secrets.randbelow(10**6):06d}"
    chain = pki.make_chain(mer_id)
    return SandboxCredentials(
        mer_id=mer_id,
        sign_private_key=chain.merchant_sign.key_pem,
        sign_cert=chain.merchant_sign.cert_pem,
        root_cert=chain.root.cert_pem,
        middle_cert=chain.middle.cert_pem,
        unionpay_sign_cert=chain.unionpay_sign.cert_pem,
        unionpay_sign_key=chain.unionpay_sign.key_pem,
    )
