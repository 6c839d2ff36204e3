"""Starting a production profile on a free block of loopback ports, as drills, tests and
benchmarks do: `paygrid up --profile prod` with PostgreSQL and NATS started by paygrid itself."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from paygrid.channels import registry
from paygrid.config import OPS_PORTS, parse_copies
from paygrid.platform.bootstrap import create_kek_file
from paygrid.platform.workers import role

LOWEST_PORT = 20_000


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral ports begin (outgoing connections take them at any moment,
    so a block chosen among them may be taken before it is bound)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port_block(size: int) -> int:
    """A base port with ``size`` free loopback ports after it, below the ephemeral range when
    there is room."""
    highest = _ephemeral_start() - size
    if highest <= LOWEST_PORT:
        highest = 60_000
    for _ in range(500):
        base = random.randint(LOWEST_PORT, highest)
        socks: list[socket.socket] = []
        try:
            for i in range(size):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free block of ports")


# api, cashier, first sandbox, gateway, postgres, nats, every role's ops port, other sandboxes,
# the bank sandbox
PROD_PORTS = 5 + OPS_PORTS + len(registry.CHANNELS) + 1


@dataclass(frozen=True)
class ProdLaunch:
    """Where a production profile started by :func:`launch_prod` listens."""

    proc: subprocess.Popen[bytes]
    api_url: str
    cashier_url: str
    sandbox_urls: dict[str, str]  # each channel's sandbox
    api_ops_url: str  # the api process's /metrics

    @property
    def sandbox_url(self) -> str:
        """The first channel's sandbox."""
        return self.sandbox_urls[registry.NAMES[0]]


def prod_layout(base: int) -> dict[str, str]:
    """The settings that put a production profile on the ports ``base`` … ``base +
    PROD_PORTS - 1``; the first channel's sandbox on base + 2, the others after the ops ports."""
    layout = {
        "api_port": str(base),
        "cashier_port": str(base + 1),
        "gateway_port": str(base + 3),
        "pg_port": str(base + 4),
        "nats_port": str(base + 5),
        "ops_base_port": str(base + 6),
    }
    for i, name in enumerate(registry.NAMES):
        port = base + 2 if i == 0 else base + 5 + OPS_PORTS + i
        layout[f"{name}_base_url"] = f"http://127.0.0.1:{port}"
    layout["bank_base_url"] = f"http://127.0.0.1:{base + PROD_PORTS - 1}"
    return layout


def launch_prod(data_dir: Path, env: dict[str, str] | None = None) -> ProdLaunch:
    """Start `paygrid up --profile prod` on a free block of loopback ports (drills, tests,
    benchmarks); PostgreSQL and NATS are started by paygrid itself. ``PAYGRID_COPIES`` in
    ``env`` runs more copies of roles (their ops ports on a second free block). The platform
    is isolated: no PAYGRID_* variable of ours (a real database URL, a config file) reaches
    it, only ``env``."""
    base = free_port_block(PROD_PORTS)
    layout = prod_layout(base)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYGRID_")},
        **{f"PAYGRID_{k.upper()}": v for k, v in layout.items()},
        # The merchant receivers of drills and tests listen on the loopback, which the
        # production profile refuses as a notify_url unless allowed.
        "PAYGRID_NOTIFY_ALLOW_NETWORKS": "127.0.0.0/8",
        **(env or {}),
    }
    extra = max(parse_copies(full_env.get("PAYGRID_COPIES", "")).values(), default=1) - 1
    if extra:  # copies after the first serve /metrics on a block of their own
        full_env["PAYGRID_COPY_OPS_BASE_PORT"] = str(free_port_block(OPS_PORTS * extra))
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (full_env.get("PAYGRID_KEK") or full_env.get("PAYGRID_KEK_FILE")):
        # The production profile requires a KEK; the harness plays the operator who made one.
        full_env["PAYGRID_KEK_FILE"] = str((data_dir / "keys" / "kek").resolve())
        create_kek_file(Path(full_env["PAYGRID_KEK_FILE"]))
    with (data_dir / "paygrid.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "paygrid.cli",
                "up",
                "--profile",
                "prod",
                "--data-dir",
                str(data_dir),
                "--api-port",
                layout["api_port"],
                "--cashier-port",
                layout["cashier_port"],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    return ProdLaunch(
        proc,
        f"http://127.0.0.1:{base}",
        f"http://127.0.0.1:{base + 1}",
        {name: layout[f"{name}_base_url"] for name in registry.NAMES},
        f"http://127.0.0.1:{int(layout['ops_base_port']) + role('api').ops_offset}",
    )
