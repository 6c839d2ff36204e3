"""The migrations build exactly the schema the code declares (storage/schema.py), on SQLite and
on PostgreSQL: a table, column, index or constraint added to one and not the other fails."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from paygrid.storage.database import Database
from paygrid.storage.schema import metadata


def test_the_migrated_database_is_the_declared_schema(
    tmp_path: Path, database_url: str | None
) -> None:
    db = Database(database_url or f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        db.migrate()
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []
    finally:
        db.dispose()
