"""Sandbox-generated NetsUnion credentials: the member's ids, its SM2 key pair and certificate
serial, the platform's public key and serial, the gateway URL.

Created on the sandbox's first start and kept as JSON under its data directory, so a restarted
sandbox keeps accepting the same member. A real member receives CFCA-issued SM2 certificates
(签名证书/加密证书) and its front-end (前置) addresses from the platform at onboarding; here the
keys are PEM (PKCS#8 / SubjectPublicKeyInfo on sm2p256v1) and the certificates are represented
by their serial numbers (MODELLED: no X.509 certificate is issued).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from paygrid.channels.netsunion import crypto, wire

CREDENTIALS_FILE = "netsunion-credentials.json"
DEFAULT_PORT = 8104
GATEWAY_PATH = "/epcc/gateway"  # MODELLED: the platform's front-end address for members
PLATFORM_ID = wire.PLATFORM_SENDER  # OBSERVED platform id in public samples

MERCHANT_KEYS = (
    "member_id",
    "platform_id",
    "member_private_key",
    "member_public_key",
    "member_cert_sn",
    "platform_public_key",
    "platform_cert_sn",
    "reserve_account",
    "sign_algorithm",
)


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    member_id: str  # 机构标识 of the payment institution: Z + 13 digits
    platform_id: str
    member_private_key: str  # PEM: the member signs and opens envelopes with it
    member_public_key: str  # PEM: registered at the platform with the member's certificate
    member_cert_sn: str  # SignSN / NcrptnSN of the member's certificate
    platform_public_key: str  # PEM: the member verifies answers and notifications with it
    platform_private_key: str  # only the sandbox has it
    platform_cert_sn: str
    reserve_account: str  # 备付金账户 the debits are credited to (ResfdAcctId, MODELLED)

    def merchant_view(self, gateway_url: str | None = None) -> dict[str, str]:
        values = {**asdict(self), "sign_algorithm": "SM2-SM3"}
        view = {key: values[key] for key in MERCHANT_KEYS}
        if gateway_url is not None:
            view["gateway_url"] = gateway_url
        return view


def gateway_url(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}{GATEWAY_PATH}"


def load_or_create_credentials(data_dir: Path, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The member's credentials for the sandbox in ``data_dir``, generated on first use."""
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
    member = crypto.generate_keypair()
    platform = crypto.generate_keypair()
    return SandboxCredentials(
        member_id=f"Z{secrets.randbelow(10**13):013d}",
        platform_id=PLATFORM_ID,
        member_private_key=crypto.private_pem(member),
        member_public_key=crypto.public_pem(member.public),
        member_cert_sn=f"{4000000000 + secrets.randbelow(10**9)}",
        platform_public_key=crypto.public_pem(platform.public),
        platform_private_key=crypto.private_pem(platform),
        platform_cert_sn=f"{4000000000 + secrets.randbelow(10**9)}",
        reserve_account=f"{secrets.randbelow(10**19):019d}",
    )
