"""The bus interface and the event envelope. Adapters: in-process today, NATS JetStream next."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

EVENT_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One domain event as it travels: ``event_id`` is stable across redeliveries."""

    event_id: str
    event_type: str  # e.g. payment.succeeded
    aggregate_id: str  # e.g. the payment id; ordering key
    occurred_at: datetime
    payload: Mapping[str, Any]
    version: int = EVENT_SCHEMA_VERSION
    request_id: str | None = None  # the merchant request it descends from, for the logs


Handler = Callable[[Event], None]
BatchHandler = Callable[[Sequence[Event]], None]
"""Processes a fetched batch in ONE transaction, all or nothing (inbox dedup for the batch:
:func:`paygrid.bus.inbox.first_deliveries`); raises if any event fails. The bus then retries
the batch's events one at a time, so a poison message fails, and dead-letters, alone."""


class DeliveryFailed(Exception):
    """At least one consumer did not process an event; the relay retries it later."""


class BusUnavailable(Exception):
    """The bus cannot take the event now (server down, timeout, stream full). Nothing was
    lost: the event stays in the outbox and is published when the bus is back. Unlike a
    consumer failure it does not count toward dead-lettering."""


class MessageBus(Protocol):
    """Delivers each published event at least once to every subscribed consumer."""

    def subscribe(self, consumer: str, event_types: frozenset[str], handler: Handler) -> None: ...

    def publish(self, event: Event) -> None:
        """Hand the event over; return only once it is durably accepted, else raise."""
        ...
