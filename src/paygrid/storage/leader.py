"""Leader election on the database: one holder of a named lock at a time, for jobs that must
run in one copy (the outbox relay, so events leave in order and none twice on purpose).

PostgreSQL: a session advisory lock on a dedicated connection; if that connection dies (the
holder crashed, or the server restarted) the lock is free for another copy. SQLite: one
process owns the file anyway, so the lock is always held.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from paygrid.storage.database import Database

log = logging.getLogger(__name__)


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
            return True
        if self._conn is not None and self._alive():
            return True
        return self._acquire()

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
