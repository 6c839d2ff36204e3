"""The other parties ``paygrid up`` starts in place of real ones: the bank sandbox (the reserve
account's bank) and the sandbox of every channel without credentials, each its own process
with its own state under DATA/sandbox/<name>. The channel sandboxes settle into the bank
sandbox, so they are told its URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from paygrid.channels import registry
from paygrid.channels.bank import SANDBOX_MODULE as BANK_SANDBOX_MODULE
from paygrid.channels.bank.settle import BANK_URL_ENV
from paygrid.config import Settings


@dataclass(frozen=True, slots=True)
class SandboxLaunch:
    name: str  # a channel's name, or "bank"
    module: str  # python -m MODULE --data-dir DIR --port PORT
    data_dir: Path
    port: int
    env: dict[str, str]  # on top of the parent's environment


def sandbox_launches(s: Settings) -> list[SandboxLaunch]:
    """What to start, the bank first (the channels settle into it)."""
    launches: list[SandboxLaunch] = []
    env: dict[str, str] = {}
    if s.bank_sandboxed:
        launches.append(_launch(s, "bank", BANK_SANDBOX_MODULE, s.bank_base_url, {}))
        env = {BANK_URL_ENV: s.bank_base_url}
    for name, channel in s.channels.items():
        if s.sandboxed(name):
            module = registry.spec(name).sandbox_module
            launches.append(_launch(s, name, module, channel.base_url, env))
    return launches


def _launch(s: Settings, name: str, module: str, url: str, env: dict[str, str]) -> SandboxLaunch:
    port = urlsplit(url).port
    assert port is not None, "config checks a sandbox's base URL has a port"
    return SandboxLaunch(name, module, s.data_dir / "sandbox" / name, port, env)
