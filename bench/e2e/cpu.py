"""Which processes the CPU time is read from (Linux /proc), and the figures made of it.

Embedded profile: paygrid is `paygrid up` and its background process; the channel sandboxes
are its other children. Prod profile: the supervisor and every role are summed as "paygrid"
and also listed one by one; PostgreSQL (with its backends), NATS and the sandboxes apart. The
pids come from DATA_DIR/status.json, written by the supervisor."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from common import CpuProbe, Probes, children, process_cpu, start_time, tree_cpu

if TYPE_CHECKING:
    from paygrid.ops.running import RunningPlatform

PARENT = "bench parent (receiver)"
LOAD = "load generator"
SETTLE_IDLE_CORES = 0.15
SETTLE_TIMEOUT_S = 20.0


def embedded_probes(running: RunningPlatform) -> tuple[Probes, Probes]:
    """`paygrid up`: the platform process with its background process (`paygrid run
    background`), and the sandboxes it started as its children; and paygrid's two processes
    one by one (web: API and cashier; background: relay, consumers, notifier, workers)."""
    platform_pid = running.proc.pid
    ours = children(platform_pid)
    background = [pid for pid in ours if b"background" in _cmdline(pid)]
    sandbox_pids = [pid for pid in ours if pid not in background]
    each: Probes = {
        "web": partial(process_cpu, platform_pid),
        "background": lambda: sum(process_cpu(pid) for pid in background),
    }
    totals: Probes = {
        "paygrid": lambda: sum(probe() for probe in each.values()),
        "sandboxes": lambda: sum(tree_cpu(c) for c in sandbox_pids),
    }
    return totals, each


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def prod_pids(running: RunningPlatform) -> dict[str, int]:
    """The production profile's processes by name, from the supervisor's status.json, plus
    the supervisor itself."""
    body = json.loads((running.data_dir / "status.json").read_text())
    pids = {"supervisor": running.proc.pid}
    pids.update({str(p["name"]): int(p["pid"]) for p in body["processes"] if p.get("pid")})
    return pids


def prod_restarts(running: RunningPlatform) -> dict[str, int]:
    """Processes the supervisor restarted (a figure is suspect if any did)."""
    body = json.loads((running.data_dir / "status.json").read_text())
    return {str(p["name"]): int(p["restarts"]) for p in body["processes"] if p.get("restarts")}


def is_paygrid(name: str) -> bool:
    """Of the prod profile's processes, paygrid's own (supervisor and roles), not the
    infrastructure it supervises (PostgreSQL, NATS, the channel sandboxes)."""
    return name not in ("postgres", "nats") and not name.startswith("sandbox")


def prod_probes(pids: dict[str, int]) -> tuple[Probes, Probes]:
    """Totals (paygrid = supervisor + every role; sandboxes, postgres, nats) and one probe per
    paygrid process. PostgreSQL and the sandboxes count with their descendants."""
    mine = {name: pid for name, pid in pids.items() if is_paygrid(name)}
    sandboxes = [pid for name, pid in pids.items() if name.startswith("sandbox")]
    totals: Probes = {
        "paygrid": lambda: sum(process_cpu(pid) for pid in mine.values()),
        "sandboxes": lambda: sum(tree_cpu(pid) for pid in sandboxes),
    }
    if "postgres" in pids:
        totals["postgres"] = partial(tree_cpu, pids["postgres"])
    if "nats" in pids:
        totals["nats"] = partial(process_cpu, pids["nats"])
    each: Probes = {name: partial(process_cpu, pid) for name, pid in mine.items()}
    return totals, each


def settle(
    probe: CpuProbe, idle_cores: float = SETTLE_IDLE_CORES, timeout: float = SETTLE_TIMEOUT_S
) -> float:
    """Wait until the processes behind ``probe`` are near idle (a freshly started prod profile
    is still importing, binding consumers, warming pools); return the last 1 s reading."""
    deadline = time.monotonic() + timeout
    busy = float("inf")
    while busy > idle_cores and time.monotonic() < deadline:
        before = probe()
        time.sleep(1.0)
        busy = probe() - before
    return busy


@contextmanager
def prod_platform(data_dir: Path, copies: str = "") -> Iterator[RunningPlatform]:
    """`paygrid up --profile prod` (with ``copies`` of roles: the ``copies`` setting, e.g.
    ``api=2,ledger=2``); on the way out, stop the supervisor and then end, by pid,
    any of its processes it left running (only if the pid still names the same process)."""
    from paygrid.ops.running import start_prod_platform

    running = start_prod_platform(data_dir, env={"PAYGRID_COPIES": copies} if copies else None)
    try:
        yield running
    finally:
        try:
            pids = prod_pids(running)
        except (OSError, ValueError):
            pids = {}
        started = {pid: start_time(pid) for pid in pids.values()}
        running.stop()
        for pid, when in started.items():
            if when is not None and start_time(pid) == when:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextmanager
def cpu_meter(probes: Probes) -> Iterator[dict[str, float]]:
    """Yields a dict filled, on exit, with the CPU seconds each probe's processes used, and
    this (parent) process's own."""
    used: dict[str, float] = {}
    before = {name: probe() for name, probe in probes.items()}
    parent0 = time.process_time()
    try:
        yield used
    finally:
        for name, probe in probes.items():
            used[name] = probe() - before[name]
        used[PARENT] = time.process_time() - parent0


def per_unit_ms(used: dict[str, float], load_cpu_s: float, units: int) -> dict[str, float]:
    """CPU ms per payment (refund, request) of each party, the load generator included."""
    cpu = {**used, LOAD: load_cpu_s}
    return {name: round(seconds * 1000 / max(units, 1), 3) for name, seconds in cpu.items()}


def cores_busy(used: dict[str, float], load_cpu_s: float, elapsed: float) -> dict[str, float]:
    """Average CPU cores each party kept busy over the measured interval."""
    cpu = {**used, LOAD: load_cpu_s}
    return {
        name: round(seconds / elapsed, 2) if elapsed > 0 else 0.0 for name, seconds in cpu.items()
    }
