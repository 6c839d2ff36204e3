"""A paygrid platform started as real processes on free loopback ports, as tests, benchmarks
and drills drive it from outside: `paygrid up` (embedded) or `paygrid up --profile prod`, with
its URLs, its demo merchant's credentials, its database and its command line at hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from paygrid.api.client import MerchantClient
from paygrid.channels import registry
from paygrid.ops.launch import launch_prod
from paygrid.ops.scratch import free_ports
from paygrid.storage.database import Database

STARTUP_TIMEOUT_S = 60.0


def wait_http(
    url: str, timeout: float = STARTUP_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:  # one client: each new one costs ~0.1 s of CPU
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            try:
                if client.get(url).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def channel_base_urls(ports: list[int] | None = None) -> dict[str, str]:
    """A free loopback port for every channel's sandbox: a test never uses a fixed port."""
    chosen = ports if ports is not None else free_ports(len(registry.NAMES))
    return {
        name: f"http://127.0.0.1:{port}" for name, port in zip(registry.NAMES, chosen, strict=True)
    }


def channel_env(urls: Mapping[str, str]) -> dict[str, str]:
    """``PAYGRID_<CHANNEL>_BASE_URL`` for each channel of ``urls``."""
    return {f"PAYGRID_{name.upper()}_BASE_URL": url for name, url in urls.items()}


# --- paygrid up -----------------------------------------------------------------------------
@dataclass
class RunningPlatform:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    api_url: str
    cashier_url: str
    sandbox_url: str
    database_url: str | None
    log_path: Path
    ops_url: str = ""  # /metrics: the operations port (prod: the api process's)
    sandbox_urls: dict[str, str] = field(default_factory=dict)  # every channel's sandbox
    more_ops_urls: list[str] = field(default_factory=list)  # other processes' (background)
    bank_url: str = ""  # the bank sandbox (the reserve account)

    def ops_urls(self) -> list[str]:
        """Every process's operations port (/metrics) of this platform."""
        return [self.ops_url, *self.more_ops_urls]

    def db_work(self) -> dict[str, float]:
        """SQL statements, transactions (read, write) and the seconds SQLite's writer slot was
        held so far, summed over the processes of :meth:`ops_urls` (``paygrid_db_*_total``)."""
        from prometheus_client.parser import text_string_to_metric_families

        totals = {"statements": 0.0, "read": 0.0, "write": 0.0, "write_held_s": 0.0}
        for url in self.ops_urls():
            text = httpx.get(f"{url}/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "paygrid_db_statements_total":
                        totals["statements"] += sample.value
                    elif sample.name == "paygrid_db_transactions_total":
                        totals[sample.labels["mode"]] += sample.value
                    elif sample.name == "paygrid_db_write_held_seconds_total":
                        totals["write_held_s"] += sample.value
        return totals

    def channel_sandbox(
        self, channel: str, method: str, path: str, body: object = None
    ) -> httpx.Response:
        """A call to one channel's sandbox (``sandbox`` is the first channel's)."""
        url = self.sandbox_urls[channel] + path
        return httpx.request(method, url, json=body, timeout=10.0)

    @property
    def credentials(self) -> dict[str, str]:
        loaded: dict[str, str] = json.loads((self.data_dir / "demo-merchant.json").read_text())
        return loaded

    def client(self) -> MerchantClient:
        c = self.credentials
        return MerchantClient(self.api_url, c["mchid"], c["key_id"], c["secret"])

    def database(self) -> Database:
        """The platform's own database, for assertions on what it stored."""
        if self.database_url:
            return Database(self.database_url)
        return Database(f"sqlite:///{self.data_dir / 'paygrid.db'}")

    def sandbox(self, method: str, path: str, body: object = None) -> httpx.Response:
        return httpx.request(method, self.sandbox_url + path, json=body, timeout=10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def paygrid(self, *args: str, database: bool = True) -> subprocess.CompletedProcess[str]:
        """A paygrid command run beside this platform: its data dir, database and sandboxes."""
        extra = ["--database-url", self.database_url] if self.database_url and database else []
        bank = {"PAYGRID_BANK_BASE_URL": self.bank_url} if self.bank_url else {}
        return subprocess.run(
            [sys.executable, "-m", "paygrid.cli", *args, "--data-dir", str(self.data_dir), *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **channel_env(self.sandbox_urls), **bank},
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_platform(
    data_dir: Path, database_url: str | None = None, env: dict[str, str] | None = None
) -> RunningPlatform:
    api, cashier, ops, background_ops, bank, *sandbox_ports = free_ports(5 + len(registry.NAMES))
    sandboxes = channel_base_urls(sandbox_ports)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "paygrid.log"
    full_env = {
        **os.environ,
        **channel_env(sandboxes),
        "PAYGRID_BANK_BASE_URL": f"http://127.0.0.1:{bank}",
        "PAYGRID_OPS_PORT": str(ops),
        "PAYGRID_BACKGROUND_OPS_PORT": str(background_ops),
        "PAYGRID_SCHEDULER_INTERVAL_S": "0.5",
        "PAYGRID_RECON_SCHEDULE": "false",  # a test that wants the recon job turns it on
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "paygrid.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--api-port",
        str(api),
        "--cashier-port",
        str(cashier),
    ]
    if database_url:
        cmd += ["--database-url", database_url]
    proc = subprocess.Popen(cmd, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, env=full_env)
    running = RunningPlatform(
        proc,
        data_dir,
        f"http://127.0.0.1:{api}",
        f"http://127.0.0.1:{cashier}",
        sandboxes[registry.NAMES[0]],
        database_url,
        log_path,
        f"http://127.0.0.1:{ops}",
        sandboxes,
        [f"http://127.0.0.1:{background_ops}"],
        f"http://127.0.0.1:{bank}",
    )
    try:
        wait_http(f"{running.api_url}/healthz", proc=proc)
        wait_http(f"{running.cashier_url}/healthz", proc=proc)
    except Exception:
        running.stop()
        raise RuntimeError(f"paygrid up did not start:\n{running.log()[-4000:]}") from None
    return running


# --- a merchant's notification endpoint -----------------------------------------------------
def wait_until(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def reachable_by_postgres(path: Path) -> None:
    """As root, PostgreSQL runs as the postgres user and must traverse every parent of the
    data dir; pytest makes its temp folders private (0700). Add search permission only."""
    if os.geteuid() != 0:
        return
    for folder in [path, *path.parents]:
        if folder.exists() and folder.stat().st_uid == 0:
            folder.chmod(folder.stat().st_mode | 0o011)


def start_prod_platform(
    data_dir: Path, env: dict[str, str] | None = None, timeout: float = 120.0
) -> RunningPlatform:
    """`paygrid up --profile prod`: PostgreSQL and NATS started by paygrid itself."""
    data_dir.mkdir(parents=True, exist_ok=True)
    reachable_by_postgres(data_dir)
    quiet = {"PAYGRID_SCHEDULER_INTERVAL_S": "0.5", "PAYGRID_RECON_SCHEDULE": "false"}
    launched = launch_prod(data_dir, {**quiet, **(env or {})})
    proc = launched.proc
    running = RunningPlatform(
        proc,
        data_dir,
        launched.api_url,
        launched.cashier_url,
        launched.sandbox_url,
        None,
        data_dir / "paygrid.log",
        launched.api_ops_url,
        dict(launched.sandbox_urls),
    )
    try:
        wait_until(
            lambda: (data_dir / "profile.json").exists() or proc.poll() is not None, timeout=timeout
        )
        if proc.poll() is not None:
            raise RuntimeError("exited")
        running.database_url = json.loads((data_dir / "profile.json").read_text())["database_url"]
    except Exception:
        running.stop()
        raise RuntimeError(
            f"paygrid up --profile prod did not start:\n{running.log()[-4000:]}"
        ) from None
    return running
