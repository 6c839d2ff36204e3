"""Inbox: a consumer records each event it processed in the transaction of its effect."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from paygrid.kernel.clock import utcnow
from paygrid.storage.schema import inbox

MAX_BATCH = 1000  # one statement; a consumer's fetched batch is far smaller


def first_delivery(conn: Connection, consumer: str, event_id: str) -> bool:
    """True the first time ``consumer`` sees ``event_id``; records it. Call inside the effect's
    transaction so the record and the effect commit (or roll back) together."""
    return event_id in first_deliveries(conn, consumer, (event_id,))


def first_deliveries(conn: Connection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """The ids of ``event_ids`` that ``consumer`` sees for the first time, recorded in one
    statement inside the batch's transaction (the rest are redeliveries: skip them). The
    statement is prebuilt and its rows sent as one multi-row INSERT (SQLAlchemy's
    "insertmanyvalues"), so it is not compiled again for each batch size."""
    assert len(event_ids) <= MAX_BATCH, len(event_ids)
    if not event_ids:
        return set()
    now = utcnow()
    rows = conn.execute(
        _record(conn.dialect.name),
        [{"consumer": consumer, "event_id": e, "processed_at": now} for e in event_ids],
    ).all()
    return {r.event_id for r in rows}


@functools.cache
def _record(dialect: str) -> ReturningInsert[tuple[str]]:
    """INSERT … ON CONFLICT DO NOTHING RETURNING event_id, in the dialect, built once."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id)
