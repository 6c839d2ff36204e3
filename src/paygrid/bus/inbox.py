"""Inbox: a consumer records each event it processed in the transaction of its effect."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from paygrid.kernel.clock import utcnow
from paygrid.storage.schema import inbox


def first_delivery(conn: Connection, consumer: str, event_id: str) -> bool:
    """True the first time ``consumer`` sees ``event_id``; records it. Call inside the effect's
    transaction so the record and the effect commit (or roll back) together."""
    seen = conn.execute(
        select(inbox.c.event_id).where(inbox.c.consumer == consumer, inbox.c.event_id == event_id)
    ).first()
    if seen is not None:
        return False
    conn.execute(insert(inbox).values(consumer=consumer, event_id=event_id, processed_at=utcnow()))
    return True
