"""The one encoding of events: typed domain events <-> JSON data (pydantic), and the envelope
<-> bytes, as the outbox stores it and NATS carries it (docs/bus.md, schema version 1).

Envelope: ``{"event_id", "event_type", "aggregate_id", "occurred_at", "version",
"request_id", "data"}``; ``data`` is the typed event's fields as JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from paygrid.bus.ports import Event
from paygrid.kernel.events import DomainEvent

E = TypeVar("E", bound=DomainEvent)
MAX_EVENT_BYTES = 256 * 1024  # an event is one aggregate's snapshot, never a batch


class UndecodableEvent(ValueError):
    """An event whose data does not fit its type or version: the consumer refuses it (the bus
    redelivers, then dead-letters it); it is never half-applied."""


@functools.cache
def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def event_data(event: DomainEvent) -> dict[str, Any]:
    data: dict[str, Any] = _adapter(type(event)).dump_python(event, mode="json")
    return data


def decode(event: Event, cls: type[E]) -> E:
    """The typed event ``cls`` carried by ``event``; raises UndecodableEvent."""
    if event.event_type != cls.TYPE:
        raise UndecodableEvent(f"{event.event_id} is {event.event_type}, not {cls.TYPE}")
    if event.version > cls.VERSION:
        raise UndecodableEvent(
            f"{event.event_id}: {cls.TYPE} version {event.version} is newer than this "
            f"consumer's {cls.VERSION}; upgrade the consumer"
        )
    try:
        typed: E = _adapter(cls).validate_python(event.payload)
    except ValidationError as exc:
        raise UndecodableEvent(f"{event.event_id}: {exc}") from None
    return typed


def envelope_bytes(event: Event) -> bytes:
    if event.wire is not None:
        return event.wire
    body = json.dumps(
        {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "aggregate_id": event.aggregate_id,
            "occurred_at": event.occurred_at.isoformat(),
            "version": event.version,
            "request_id": event.request_id,
            "data": event.payload,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert len(body) <= MAX_EVENT_BYTES, f"event {event.event_id} is {len(body)} bytes"
    return body


def envelope_from_bytes(body: bytes | str) -> Event:
    """The event of an envelope; it keeps ``body`` to be sent on as it is."""
    raw: Mapping[str, Any] = json.loads(body)
    event = Event(
        event_id=raw["event_id"],
        event_type=raw["event_type"],
        aggregate_id=raw["aggregate_id"],
        occurred_at=datetime.fromisoformat(raw["occurred_at"]),
        payload=raw["data"],
        version=raw["version"],
        request_id=raw.get("request_id"),
    )
    object.__setattr__(event, "wire", body.encode() if isinstance(body, str) else body)
    return event
