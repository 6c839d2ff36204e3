"""What every benchmark here shares: paths, per-process CPU time from /proc, percentiles, ratios,
py-spy sampling, and a note on how busy the machine was.

Benchmarks run as scripts (``.venv/bin/python bench/<name>.py``), so this directory is first on
``sys.path`` and ``import common`` finds this module. The benchmarks import nothing from the
tests: the platform they start and the servers it needs come from ``paygrid.ops.running`` and
``paygrid.ops.scratch``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent

RESULTS_DIR = ROOT / "bench" / "results"  # git-ignored
PY_SPY_ATTACH_S = 1.0
PY_SPY_STOP_TIMEOUT_S = 30.0

# --- CPU accounting (Linux /proc) --------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")
CpuProbe = Callable[[], float]  # CPU seconds used so far by some processes
Probes = dict[str, CpuProbe]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (index 0 = field 3), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int, reaped: bool = False) -> float:
    """CPU seconds of one process (all its threads); with ``reaped``, plus its waited-for
    children's."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    """A process, its live descendants and the children it already reaped."""
    return process_cpu(pid, reaped=True) + sum(tree_cpu(c) for c in children(pid))


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): tells a pid from its reuse."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None  # field 22: starttime


def postmaster_probe(data_dir: Path) -> CpuProbe:
    """PostgreSQL's postmaster and its backends (reaped ones included)."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    return lambda: tree_cpu(postmaster)


# --- figures -----------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def spread(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 in ms and the count, the shape every latency figure is reported in."""
    return {
        "p50_ms": ms(percentile(seconds, 50)),
        "p99_ms": ms(percentile(seconds, 99)),
        "n": len(seconds),
    }


def spread_us(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 in microseconds, for figures far below a millisecond."""
    return {
        "p50_us": round(percentile(seconds, 50) * 1e6, 2),
        "p99_us": round(percentile(seconds, 99) * 1e6, 2),
        "n": len(seconds),
    }


def ratio(a: float | None, b: float | None, digits: int) -> float | None:
    """a / b rounded; None when either is missing, NaN or b is 0."""
    if a is None or b is None or not b or a != a or b != b:  # x != x: NaN
        return None
    return round(a / b, digits)


def shown(path: Path) -> str:
    """A path as the output names it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pg_version() -> str:
    from paygrid.ops.scratch import pg_bin

    bindir = pg_bin()
    return bindir.parent.name if bindir else "?"


def machine_note() -> dict[str, object]:
    """How busy the machine is: the figures of a shared machine are comparable only as ratios
    measured in the same run."""
    one, five, fifteen = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def progress(console: Console) -> Progress:
    """The bar long work shows: what, how far, how many of how many, how long so far."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


# --- py-spy ------------------------------------------------------------------------------------
@contextmanager
def py_spy(
    exe: str | None,
    pids: Mapping[str, int],
    prefix: str,
    rate: int = 250,
    subprocesses: bool = False,
    out_dir: Path = RESULTS_DIR,
) -> Iterator[list[str]]:
    """Optionally sample each process (GIL-holding samples only) into raw collapsed stacks,
    ``out_dir``/<prefix>-<name>-pyspy.txt; yields those files."""
    procs: list[subprocess.Popen[bytes]] = []
    files: list[str] = []
    if exe:
        for name, pid in pids.items():
            path = out_dir / f"{prefix}-{name}-pyspy.txt"
            argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(path)]
            argv += ["--rate", str(rate), "--gil", "--nonblocking"]
            argv += ["--subprocesses"] if subprocesses else []
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            files.append(shown(path))
        time.sleep(PY_SPY_ATTACH_S)
    try:
        yield files
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=PY_SPY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
