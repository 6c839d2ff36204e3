"""Engine set-up and the unit of work (one transaction, one connection).

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` so concurrent writers never fail on a
read-to-write upgrade; they queue for the one writer slot in the process
(:class:`~paygrid.storage.writer_queue.WriterQueue`), not in SQLite's busy handler. PostgreSQL
runs READ COMMITTED with row locks; a pooled connection is pinged only after it sat idle (a
dead one found on use invalidates the pool and the request answers 503, once).
Every statement and transaction is counted (``paygrid_db_statements_total``,
``paygrid_db_transactions_total``): the work per payment is a tested budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from prometheus_client import Counter
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError

from paygrid.storage.writer_queue import WriterQueue

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 10
PG_IDLE_PING_S = 30.0  # a connection idle longer than this is pinged before use
READ_ONLY_OPTION = "paygrid_read_only"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SecretSealer = Callable[[str, str, str], tuple[str, str]]  # (mchid, key_id, secret) -> sealed


class DatabaseUnavailable(Exception):
    """The database cannot be reached; callers answer 503 and change nothing."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'paygrid.db').resolve()}"


STATEMENTS = Counter("paygrid_db_statements_total", "SQL statements executed (no BEGIN/COMMIT)")
TRANSACTIONS = Counter(
    "paygrid_db_transactions_total",
    "Transactions begun",
    ["mode"],  # mode: read | write
)
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        _configure_sqlite(engine)
    else:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        engine = create_engine(url, pool_size=PG_POOL_SIZE, max_overflow=10, pool_timeout=5)
        _ping_when_idle(engine)
    _count(engine)
    return engine


def _count(engine: Engine) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _statement(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip()[:9].upper().startswith(_CONTROL):
            STATEMENTS.inc()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION)
        TRANSACTIONS.labels("read" if read_only else "write").inc()


def _ping_when_idle(engine: Engine) -> None:
    """Instead of a pre-ping on every checkout (an extra round trip per transaction): ping
    only a connection that sat idle long enough for a firewall or a restart to have cut it."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PG_IDLE_PING_S:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc  # the pool opens a new connection


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front; readers do not queue behind them (WAL).
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """Owns the engine; ``transaction()`` is the unit of work every handler runs in."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writers = _writer_queue(url) if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self._writer_turn(), self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            if _is_unavailable(exc):
                raise DatabaseUnavailable(str(exc.orig)) from exc
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction that only reads: a consistent snapshot, no write lock."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{READ_ONLY_OPTION: True})
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            if _is_unavailable(exc):
                raise DatabaseUnavailable(str(exc.orig)) from exc
            raise

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._writers is None:
            yield
            return
        with self._writers.turn():
            yield

    def ping(self) -> bool:
        """True when the database answers a trivial query (readiness)."""
        try:
            with self.read() as conn:
                conn.exec_driver_sql("SELECT 1")
        except (DatabaseUnavailable, OperationalError):
            return False
        return True

    def migrate(self, seal_secret: SecretSealer | None = None) -> None:
        """Bring the schema to the newest Alembic revision (idempotent). ``seal_secret``
        seals merchant secrets an older revision stored in plain text (migration 0003)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["seal_secret"] = seal_secret
        with self._writer_turn(), self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        if cfg.attributes.get("sealed_plaintext_rows") and self.is_sqlite:
            self._vacuum()

    def _vacuum(self) -> None:
        """Rewrite the SQLite file so the plaintext pages a migration replaced are gone from
        it and from its WAL (PostgreSQL keeps dead tuples until its own vacuum: rotate)."""
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()


def _writer_queue(url: str) -> WriterQueue:
    database = make_url(url).database
    assert database and database != ":memory:", "paygrid's SQLite database is a file"
    return WriterQueue(Path(database).resolve())


def _is_unavailable(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(
        s in text
        for s in (
            "connection refused",
            "could not connect",
            "server closed",
            "terminating connection",
            "connection is closed",
            "unable to open database",
        )
    )


def insert_ignoring_duplicates(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT … ON CONFLICT DO NOTHING in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
