"""The bus interface and the event envelope. Adapters: in-process (embedded profile) and NATS
JetStream (production profile). Both move events in batches (docs/bus.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
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
    wire: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """The envelope's bytes when the event was read from them (an outbox row): published as
    they are instead of encoded again. Not an init field, so ``dataclasses.replace`` (another
    event) drops it."""


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


class Outcome(Enum):
    """What became of one event of a published batch."""

    PUBLISHED = "published"  # durably accepted (JetStream) / every subscriber processed it
    FAILED = "failed"  # a consumer failed on it: counts toward dead-lettering (in-process)
    HELD = "held"  # not handed on: an earlier event of its aggregate failed in this pass
    UNAVAILABLE = "unavailable"  # the bus could not take it now: not a delivery failure


@dataclass(frozen=True, slots=True)
class PublishResult:
    outcome: Outcome
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.PUBLISHED


PUBLISHED = PublishResult(Outcome.PUBLISHED)
HELD = PublishResult(Outcome.HELD)


class MessageBus(Protocol):
    """Delivers each published event at least once to every subscribed consumer, in order per
    aggregate (``aggregate_id``) for each consumer."""

    def subscribe(
        self, consumer: str, event_types: frozenset[str], handler: BatchHandler
    ) -> None: ...

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        """Hand the events over (in outbox order); one result per event, in the same order.
        An event is PUBLISHED only once durably accepted; never raises for a single event."""
        ...

    def publish(self, event: Event) -> None:
        """One event: raise BusUnavailable or DeliveryFailed unless it was PUBLISHED."""
        ...


def raise_unless_published(result: PublishResult) -> None:
    """``publish`` of one event in terms of ``publish_batch``."""
    if result.outcome is Outcome.UNAVAILABLE:
        raise BusUnavailable(result.error)
    if not result.ok:
        raise DeliveryFailed(result.error or result.outcome.value)
