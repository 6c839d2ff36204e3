"""In-process bus for the embedded profile: publish calls every subscriber synchronously.

Durability comes from the outbox: the relay marks an event published only after every
subscriber returned, so a crash in between redelivers it and the inbox drops the duplicate.
"""

from __future__ import annotations

import logging
import threading

from paygrid.bus.ports import DeliveryFailed, Event, Handler
from paygrid.kernel import context

log = logging.getLogger(__name__)


class InProcessBus:
    def __init__(self) -> None:
        self._subscribers: list[tuple[str, frozenset[str], Handler]] = []
        self._lock = threading.Lock()

    def subscribe(self, consumer: str, event_types: frozenset[str], handler: Handler) -> None:
        with self._lock:
            assert all(c != consumer for c, _, _ in self._subscribers), consumer
            self._subscribers.append((consumer, event_types, handler))

    def publish(self, event: Event) -> None:
        failures: list[str] = []
        for consumer, types, handler in list(self._subscribers):
            if event.event_type not in types:
                continue
            token = context.request_id.set(event.request_id)
            try:
                handler(event)
            except Exception as exc:
                log.exception("consumer %s failed on %s", consumer, event.event_id)
                failures.append(f"{consumer}: {exc}")
            finally:
                context.request_id.reset(token)
        if failures:
            raise DeliveryFailed("; ".join(failures))
