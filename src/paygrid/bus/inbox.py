"""Inbox: a consumer records each event it processed in the transaction of its effect."""

from __future__ import annotations

from sqlalchemy import Connection

from paygrid.kernel.clock import utcnow
from paygrid.storage.database import insert_ignoring_duplicates
from paygrid.storage.schema import inbox


def first_delivery(conn: Connection, consumer: str, event_id: str) -> bool:
    """True the first time ``consumer`` sees ``event_id``; records it. Call inside the effect's
    transaction so the record and the effect commit (or roll back) together."""
    inserted = conn.execute(
        insert_ignoring_duplicates(conn, inbox)
        .values(consumer=consumer, event_id=event_id, processed_at=utcnow())
        .returning(inbox.c.event_id)
    ).first()
    return inserted is not None
