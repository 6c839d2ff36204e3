"""Leader election on the database: one holder of a named lock at a time, for jobs that must
run in one copy (the outbox relay, so events leave in order and none twice on purpose).

PostgreSQL: a session advisory lock on a dedicated connection; if that connection dies (the
holder crashed, or the server restarted) the lock is free for another copy. SQLite: an
exclusive ``flock`` on a file beside the database (``<db>.<name>.lock``), held as long as the
process lives, so of two processes on one file (a background process still stopping while its
successor starts) only one leads; the kernel frees it when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from paygrid.storage.database import Database

log = logging.getLogger(__name__)
_FILE_LOCKS: dict[str, int] = {}  # SQLite: lock file -> its descriptor, held by this process
_FILE_LOCKS_GUARD = threading.Lock()


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LeaderLock:
    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._name = name
        self._key = _lock_key(name)
        self._conn: Connection | None = None

    def held(self) -> bool:
        """True while we hold the lock; tries to take it when we do not."""
        if self._db.is_sqlite:
            return self._file_lock()
        if self._conn is not None and self._alive():
            return True
        return self._acquire()

    def _file_lock(self) -> bool:
        """Of the processes on one SQLite file, one leads until it exits; within a process
        every copy shares its lead (one relay per process anyway)."""
        path = self._db.engine.url.database
        if not path or path == ":memory:":
            return True  # a database of this process alone
        lock_path = os.path.abspath(f"{path}.{self._name}.lock")
        with _FILE_LOCKS_GUARD:
            if lock_path in _FILE_LOCKS:
                return True
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            _FILE_LOCKS[lock_path] = fd  # held until this process exits
        log.info("took the %s lock: this process leads", self._name)
        return True

    def _alive(self) -> bool:
        assert self._conn is not None
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except DBAPIError:
            log.warning("lost the %s lock's connection; leadership dropped", self._name)
            self.release()
            return False

    def _acquire(self) -> bool:
        try:
            conn = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            )
        except DBAPIError:
            return False
        if not got:
            conn.close()
            return False
        log.info("took the %s lock: this copy leads", self._name)
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.invalidate()  # a dead or live session: either way the lock goes
            self._conn = None
