"""SQLite's one writer, queued in the process instead of in SQLite's busy handler.

SQLite admits one write transaction at a time. A writer that finds the lock taken waits in
SQLite's busy handler, which sleeps 1 -> 100 ms between tries: under load writers wait far
longer than the lock is held (create p99 of seconds for a lock held ~64% of the time). Here a
writer first takes a thread lock (woken at once when the holder releases) and then an
``flock`` on a file beside the database (other processes on the same file, e.g. the embedded
profile's workers process, queue in the kernel the same way). Only then does it BEGIN
IMMEDIATE, which no longer waits. Readers never queue: WAL gives them a snapshot."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Counter, Histogram

WRITE_WAIT = Histogram(
    "paygrid_db_write_wait_seconds",
    "Time a write transaction waited for SQLite's one writer slot (in-process queue)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
WRITE_HELD = Counter(
    "paygrid_db_write_held_seconds",
    "Time this process held SQLite's one writer slot (its share of the writer's busy time)",
)


class WriterQueue:
    """One writer at a time across the threads of this process and the processes sharing
    the database file. Not re-entrant: a thread never opens a write transaction inside another
    (SQLite would deadlock on itself as well)."""

    def __init__(self, database_file: Path) -> None:
        self._path = database_file.with_name(database_file.name + ".writer-lock")
        self._thread_lock = threading.Lock()
        self._fd: int | None = None  # opened lazily: the directory may not exist yet
        self._pid = os.getpid()
        self._owner: int | None = None  # the thread in its turn

    @contextmanager
    def turn(self) -> Iterator[None]:
        me = threading.get_ident()
        assert self._owner != me, "a write transaction inside another one on the same thread"
        started = time.perf_counter()
        with self._thread_lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._owner = me
            taken = time.perf_counter()
            try:
                WRITE_WAIT.observe(taken - started)
                yield
            finally:
                self._owner = None
                fcntl.flock(fd, fcntl.LOCK_UN)
                WRITE_HELD.inc(time.perf_counter() - taken)

    def _file(self) -> int:
        # After a fork the child needs its own open file: flock locks belong to the open
        # file description, which a forked child would share with its parent.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
