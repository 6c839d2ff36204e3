"""Engine set-up and the unit of work (one transaction, one connection).

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` so concurrent writers queue on the lock
instead of failing on a read-to-write upgrade; PostgreSQL runs READ COMMITTED with row locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 10
READ_ONLY_OPTION = "paygrid_read_only"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SecretSealer = Callable[[str, str, str], tuple[str, str]]  # (mchid, key_id, secret) -> sealed


class DatabaseUnavailable(Exception):
    """The database cannot be reached; callers answer 503 and change nothing."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'paygrid.db').resolve()}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url, pool_size=PG_POOL_SIZE, max_overflow=10, pool_pre_ping=True, pool_timeout=5
    )


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

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
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
