"""The embedded profile's second process: every background worker of
:data:`paygrid.platform.workers.WORKERS` (relay with the in-process bus, the ledger and notify
consumers, notifier delivery, expiry and 补单, housekeeping), beside the process that serves
HTTP, on the same SQLite file (WAL). Two processes, so two cores: the web servers and the
workers no longer share one GIL.

``paygrid up`` starts it as ``paygrid run background`` with its settings in PAYGRID_*
variables, restarts it if it dies (backoff 0.5 s doubling to 10 s, reset after a minute up),
and stops it on Ctrl-C / SIGTERM. The child is SIGTERMed if ``paygrid up`` dies, even by
SIGKILL (Linux PR_SET_PDEATHSIG). It tells its parent it is ready over a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import uvicorn

from paygrid.config import Settings, child_env
from paygrid.ops import observability as obs
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.platform.workers import BACKGROUND, all_consumers, embedded_workers

log = logging.getLogger("paygrid.background")
OPS_HOST = "127.0.0.1"  # metrics for operators: never on a public interface
READY_FD_ENV = "PAYGRID_BACKGROUND_READY_FD"  # not a setting: the pipe the child is ready on
READY_TIMEOUT_S = 60.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 60.0
STOP_GRACE_S = 15.0  # the parent's wait for the child's stop, then SIGKILL
STOP_DEADLINE_S = 12.0  # the child's own bound on its stop (attempts in flight: 5 s + 5 s)
LOOP_JOIN_S = 5.0  # all the loops together, on the way out
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_STUCK = 3


# --- the child ----------------------------------------------------------------------------------
def run_background(settings: Settings) -> None:
    """The child's life: wire the platform with every consumer, run every embedded worker
    until SIGTERM or SIGINT, then stop them and let deliveries in flight end."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    platform = bootstrap(settings, consumers=all_consumers(), migrate=False)
    loops = [worker.loop(platform) for worker in embedded_workers()]
    for loop in loops:
        loop.start()
    _serve_ops(platform)
    _tell_ready()
    log.info("background workers up: %s", ", ".join(loop.name for loop in loops))
    stop.wait()
    _exit_if_stuck(STOP_DEADLINE_S)
    for loop in loops:
        loop.stopping.set()
    joined_by = time.monotonic() + LOOP_JOIN_S
    for loop in loops:
        loop.join(timeout=max(0.0, joined_by - time.monotonic()))
    platform.close()


def _exit_if_stuck(deadline_s: float) -> None:
    """A stop that has not ended after ``deadline_s`` ends here, with every thread's stack in
    the log: the parent must not wait on it, and what is in flight is safe to cut (outbox,
    inbox, notifications delivered at least once)."""

    def give_up() -> None:
        log.error("background stop still running after %.0fs: exiting; stacks follow", deadline_s)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(EXIT_STUCK)

    timer = threading.Timer(deadline_s, give_up)
    timer.daemon = True
    timer.start()


def _serve_ops(platform: Platform) -> None:
    """This process's /healthz, /readyz and /metrics (its database work, its consumers) on
    the background operations port, in a thread: the workers are threads already."""
    app = obs.ops_app({"database": platform.db.ping})
    config = uvicorn.Config(
        app,
        host=OPS_HOST,
        port=platform.settings.background_ops_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)  # off the main thread it leaves signals alone
    threading.Thread(target=server.run, name="background-ops", daemon=True).start()


def _tell_ready() -> None:
    fd = os.environ.get(READY_FD_ENV)
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), b"1")
            os.close(int(fd))


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when ``paygrid up`` dies, even by SIGKILL."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


# --- the parent's side ---------------------------------------------------------------------------
class BackgroundProcess:
    """Starts, watches (restarts with a bounded backoff) and stops the background process."""

    def __init__(self, settings: Settings, verbose: bool = False) -> None:
        data_dir = settings.data_dir.resolve()
        kek_file = settings.kek_file.resolve() if settings.kek_file else None
        self._env = child_env(replace(settings, data_dir=data_dir, kek_file=kek_file), os.environ)
        self._argv = [sys.executable, "-m", "paygrid.cli", "run", BACKGROUND]
        self._argv += ["--verbose"] if verbose else []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._ready_fd: int | None = None
        self.restarts = 0

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child, wait until its workers run, then watch it."""
        self.spawn()
        self.watch_when_ready()

    def spawn(self) -> None:
        """Start the child without waiting (the caller does other work meanwhile)."""
        self._ready_fd = self._spawn()

    def watch_when_ready(self) -> None:
        """Wait until the child spawned by :meth:`spawn` runs its workers, then watch it."""
        assert self._proc is not None and self._ready_fd is not None, "spawn() first"
        try:
            if not _read_ready(self._ready_fd, self._proc):
                raise RuntimeError(
                    f"the background process did not start within {READY_TIMEOUT_S:.0f}s "
                    f"(exit {self._proc.poll()}); see the log above"
                )
        finally:
            os.close(self._ready_fd)
            self._ready_fd = None
        self._watcher = threading.Thread(target=self._watch, name="background-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> int:
        """Start the child; returns the pipe it tells readiness on."""
        read_fd, write_fd = os.pipe()
        try:
            self._proc = subprocess.Popen(
                self._argv,
                env={**self._env, READY_FD_ENV: str(write_fd)},
                pass_fds=(write_fd,),
                start_new_session=True,  # Ctrl-C reaches paygrid up, which stops us in order
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        return read_fd

    def _watch(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            while proc.poll() is None and not self._stopping.wait(0.2):
                if time.monotonic() - started > HEALTHY_AFTER_S:
                    backoff = BACKOFF_START_S
            if self._stopping.is_set():
                return
            log.error(
                "background process (pid %d) died with %s; restart in %.1fs",
                proc.pid,
                proc.returncode,
                backoff,
            )
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            self.restarts += 1
            try:
                os.close(self._spawn())  # not waited for: the loop above watches it
            except OSError:  # could not even fork: try again after the next backoff
                log.exception("could not restart the background process")

    def stop(self) -> None:
        """SIGTERM the child and wait for it (SIGKILL after STOP_GRACE_S)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_ready(fd: int, proc: subprocess.Popen[bytes]) -> bool:
    """Until the child writes to the pipe (True) or closes it by exiting (False)."""
    import select

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.5)
        if readable:
            return os.read(fd, 1) == b"1"
        if proc.poll() is not None:
            return False
    return False
