"""Outbox: events are rows written in the same transaction as the state change they describe."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from paygrid.bus.codec import envelope_bytes, event_data
from paygrid.bus.ports import Event
from paygrid.kernel import context
from paygrid.kernel.clock import utcnow
from paygrid.kernel.events import DomainEvent
from paygrid.kernel.ids import new_id
from paygrid.storage.schema import outbox

INSERT = insert(outbox)  # built once: building it per event cost more than executing it


def record_event(conn: Connection, domain_event: DomainEvent) -> Event:
    """Append a typed event to the outbox inside the caller's transaction."""
    event = Event(
        event_id=new_id("evt"),
        event_type=domain_event.TYPE,
        aggregate_id=domain_event.aggregate_id,
        occurred_at=utcnow(),
        payload=event_data(domain_event),
        version=domain_event.VERSION,
        request_id=context.request_id.get(),
    )
    conn.execute(
        INSERT,
        {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "aggregate_id": event.aggregate_id,
            "payload": envelope_bytes(event).decode(),
            "created_at": event.occurred_at,
            "attempts": 0,
            "dead": False,
        },
    )
    return event
