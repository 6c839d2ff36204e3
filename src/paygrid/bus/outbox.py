"""Outbox: events are rows written in the same transaction as the state change they describe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert

from paygrid.bus.ports import Event
from paygrid.kernel import context
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.storage.schema import outbox


def record_event(
    conn: Connection, event_type: str, aggregate_id: str, payload: Mapping[str, Any]
) -> Event:
    """Append an event to the outbox inside the caller's transaction."""
    event = Event(
        event_id=new_id("evt"),
        event_type=event_type,
        aggregate_id=aggregate_id,
        occurred_at=utcnow(),
        payload=dict(payload),
        request_id=context.request_id.get(),
    )
    conn.execute(
        insert(outbox).values(
            event_id=event.event_id,
            event_type=event.event_type,
            aggregate_id=aggregate_id,
            payload=json.dumps(
                {"version": event.version, "data": event.payload, "request_id": event.request_id},
                separators=(",", ":"),
                ensure_ascii=False,
            ),
            created_at=event.occurred_at,
            attempts=0,
            dead=False,
        )
    )
    return event
