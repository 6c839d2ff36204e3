"""The core is channel-neutral: a channel's name appears only in its own folder and in the
channel registry (configuration documentation lists them too). Adding a channel is one folder
and one registry entry, never edits across the core."""

from __future__ import annotations

import re
from pathlib import Path

from paygrid.channels import registry

SRC = Path(__file__).resolve().parents[2] / "src" / "paygrid"
# Every channel of the registry, and the names people write them by.
NAMES = re.compile(
    "|".join([*registry.NAMES, "wechat", "weixin", "微信", "alipay", "支付宝", "unionpay", "银联"]),
    re.IGNORECASE,
)
ALLOWED = {SRC / "channels" / "registry.py"}


def naming_files() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".html", ".js", ".css", ".toml"):
            continue
        if (SRC / "channels") in path.parents and path.parent != SRC / "channels":
            continue  # a channel's own folder
        if path in ALLOWED:
            continue
        if NAMES.search(path.read_text(encoding="utf-8")):
            found.append(str(path.relative_to(SRC)))
    return found


def test_no_channel_is_named_outside_its_folder_and_the_registry() -> None:
    assert naming_files() == []


def test_the_guard_sees_a_name() -> None:
    """The check itself can fail: the registry names every channel."""
    assert NAMES.search((SRC / "channels" / "registry.py").read_text(encoding="utf-8"))
