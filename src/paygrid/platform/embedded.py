"""The embedded profile: the web servers (API, cashier, operations) in one event loop of this
process, every worker of :data:`paygrid.platform.workers.WORKERS` and every bus consumer in a
second process it supervises (:mod:`paygrid.platform.background`), both on the same SQLite file,
and the channel sandboxes as child processes. ``paygrid up`` calls :func:`run_embedded`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
import uvloop
from fastapi import FastAPI

from paygrid import datadir
from paygrid.agreements.service import AgreementService
from paygrid.api.app import ApiDeps, create_app
from paygrid.cashier.app import MerchantView, create_cashier_app
from paygrid.channels import registry
from paygrid.config import Settings
from paygrid.merchants import repository as merchant_repo
from paygrid.merchants.service import create_merchant
from paygrid.ops import observability as obs
from paygrid.platform.background import BackgroundProcess
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.platform.sandboxes import SandboxLaunch, sandbox_launches

SANDBOX_START_TIMEOUT_S = 30.0
OPS_HOST = "127.0.0.1"  # metrics and health for operators: never on a public interface
DEMO_MERCHANT_NAME = "Demo Merchant 演示商户"


def spawn_sandbox(launch: SandboxLaunch) -> subprocess.Popen[bytes]:
    """A sandbox is another party: its own process, its own state under DATA/sandbox/NAME.
    Returns at once; :func:`wait_sandbox` waits until it answers."""
    launch.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = _sandbox_log(launch)
    argv = [sys.executable, "-m", launch.module, "--data-dir", str(launch.data_dir)]
    return subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(launch.port)],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **launch.env},
    )


def wait_sandbox(launch: SandboxLaunch, proc: subprocess.Popen[bytes], deadline: float) -> None:
    with httpx.Client(timeout=1.0) as client:  # one client: each new one costs ~0.1 s of CPU
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log_path = _sandbox_log(launch)
                raise RuntimeError(
                    f"{launch.name} sandbox exited with {proc.returncode}; see {log_path}"
                )
            try:
                client.get(f"http://127.0.0.1:{launch.port}/sandbox/credentials")
                return
            except httpx.HTTPError:
                time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{launch.name} sandbox did not start on port {launch.port}")


def _sandbox_log(launch: SandboxLaunch) -> Path:
    return launch.data_dir.parent.parent / f"sandbox-{launch.name}.log"


def ensure_demo_merchant(platform: Platform) -> dict[str, str]:
    """Provision the demo merchant once; its credentials live in DIR/demo-merchant.json."""
    path = platform.settings.data_dir / "demo-merchant.json"
    if path.exists():
        creds: dict[str, str] = json.loads(path.read_text())
        with platform.db.read() as conn:
            key = merchant_repo.get_key(conn, platform.vault, creds["mchid"], creds["key_id"])
            if key is not None:
                return creds
    onboarded = create_merchant(
        platform.db, platform.vault, DEMO_MERCHANT_NAME, methods=registry.NAMES
    )
    creds = onboarded.credentials()
    creds["api_base_url"] = platform.settings.api_base_url + "/v1"
    datadir.write_private(path, json.dumps(creds, indent=2, ensure_ascii=False) + "\n")
    return creds


def merchant_lookup(platform: Platform) -> Callable[[str], MerchantView]:
    def lookup(mchid: str) -> MerchantView:
        with platform.db.read() as conn:
            merchant = merchant_repo.get(conn, mchid)
        assert merchant is not None
        return MerchantView(merchant.name, merchant.methods)

    return lookup


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us: several run in one event loop. Given
    ``sockets``, it serves on them instead of binding its own."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket] | None) -> None:
        super().__init__(config)
        self._sockets = sockets

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets or self._sockets)


def _server(
    app: FastAPI, host: str, port: int, sock: socket.socket | None = None
) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    return _Server(config, [sock] if sock is not None else None)


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket that copies of a role bind together (SO_REUSEPORT: the kernel
    spreads new connections over them), with Nagle off (TCP_NODELAY, inherited by accepted
    connections: uvicorn issue #3149)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def run_embedded(
    settings: Settings,
    on_ready: Callable[[Platform, dict[str, str]], None],
    verbose: bool = False,
) -> None:
    """Run everything on one machine: sandboxes and the background workers as children, the
    web servers in this process."""
    datadir.secure(settings.data_dir)
    children: list[subprocess.Popen[bytes]] = []
    background: BackgroundProcess | None = None
    try:
        # Everything that can start at once does: the sandboxes, this process's migration and
        # web apps, the background process (a start took 13 s one after the other, 2 cores).
        launches = sandbox_launches(settings)
        children.extend(spawn_sandbox(launch) for launch in launches)
        platform = bootstrap(settings, consumers=())  # migrates; the consumers run in background
        creds = ensure_demo_merchant(platform)
        background = BackgroundProcess(settings, verbose)
        background.spawn()
        deadline = time.monotonic() + SANDBOX_START_TIMEOUT_S
        for launch, proc in zip(launches, children, strict=True):
            wait_sandbox(launch, proc, deadline)
        checks: dict[str, obs.Check] = {
            "database": platform.db.ping,
            "workers": lambda: background is not None and background.alive,
        }
        servers = _web_servers(platform, checks)
        background.watch_when_ready()
        uvloop.run(_serve(servers, lambda: on_ready(platform, creds)))
        background.stop()
        platform.close()
    finally:
        if background is not None:
            background.stop()
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def _web_servers(platform: Platform, checks: dict[str, obs.Check]) -> list[uvicorn.Server]:
    """The merchant API (which also takes the channels' callbacks), the cashier, and the
    operations port (/healthz, /readyz with the background process, /metrics)."""
    s = platform.settings
    deps = ApiDeps(
        platform.db,
        platform.payments,
        platform.notify,
        s.zone,
        vault=platform.vault,
        data_dir=s.data_dir,
    )
    api = _server(create_app(deps), s.host, s.api_port)
    cashier_app = create_cashier_app(
        platform.payments,
        merchant_lookup(platform),
        s.zone,
        {"database": platform.db.ping},
        AgreementService.over(platform.db, platform.payments),
    )
    cashier = _server(cashier_app, s.host, s.cashier_port)
    ops = _server(obs.ops_app(checks), OPS_HOST, s.ops_port)
    return [api, cashier, ops]


async def _serve(servers: list[uvicorn.Server], on_ready: Callable[[], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            raise RuntimeError("a server failed to start (port in use?)")
        await asyncio.sleep(0.05)
    on_ready()
    await stop.wait()
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)


def pid_file(data_dir: Path) -> Path:
    return data_dir / "paygrid.pid"


def write_pid(data_dir: Path) -> None:
    datadir.write_private(pid_file(data_dir), str(os.getpid()))
