"""No pre-ping per checkout on PostgreSQL: a connection the server dropped is found on use,
that one unit of work fails as DatabaseUnavailable (the API answers 503) and the pool is
renewed, so the next one succeeds; a connection idle for long is pinged before use."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from paygrid.storage import database as database_module
from paygrid.storage.database import Database, DatabaseUnavailable
from tests.support import PostgresServer


def _kill_other_backends(db: Database, server: PostgresServer) -> int:
    admin = Database(server.url())
    try:
        with admin.transaction() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": db.engine.url.database},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(killed)


def _select_one(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


def test_a_dropped_connection_fails_one_unit_of_work_then_the_pool_recovers(
    postgres: PostgresServer,
) -> None:
    db = Database(postgres.create_database("reconnect"))
    try:
        assert _select_one(db) == 1
        assert _kill_other_backends(db, postgres) >= 1
        failures = 0
        for _ in range(3):
            try:
                _select_one(db)
            except DatabaseUnavailable:
                failures += 1
        assert failures <= 1  # only the unit of work that met the dead connection
        assert _select_one(db) == 1
    finally:
        db.dispose()


def test_a_connection_idle_for_long_is_pinged_and_replaced_before_use(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PG_IDLE_PING_S", 0.0)  # every connection "idle"
    db = Database(postgres.create_database("idleping"))
    try:
        assert _select_one(db) == 1
        assert _kill_other_backends(db, postgres) >= 1
        assert _select_one(db) == 1  # the ping found it dead: a new connection, no failure
    finally:
        db.dispose()
