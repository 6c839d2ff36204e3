"""In-process bus for the embedded profile: a published batch is handed to every subscriber
synchronously, as one batch per subscriber (the events of the types it subscribed to).

Durability comes from the outbox: the relay marks an event published only after every
subscriber processed it, so a crash in between redelivers it and the inbox drops the duplicate.
A subscriber's failing batch is handed on again one event at a time (paygrid.bus.batching);
an event that still fails is FAILED (the relay retries it with backoff, then dead-letters it),
and the later events of its aggregate are HELD for that subscriber until it passes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from paygrid.bus.batching import Verdict, handle_batch
from paygrid.bus.ports import (
    HELD,
    PUBLISHED,
    BatchHandler,
    Event,
    Outcome,
    PublishResult,
    raise_unless_published,
)

_RANK = {Outcome.PUBLISHED: 0, Outcome.HELD: 1, Outcome.FAILED: 2}


class InProcessBus:
    def __init__(self) -> None:
        self._subscribers: list[tuple[str, frozenset[str], BatchHandler]] = []
        self._lock = threading.Lock()

    def subscribe(self, consumer: str, event_types: frozenset[str], handler: BatchHandler) -> None:
        with self._lock:
            assert all(c != consumer for c, _, _ in self._subscribers), consumer
            self._subscribers.append((consumer, event_types, handler))

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        results = [PUBLISHED] * len(events)
        for consumer, types, handler in list(self._subscribers):
            mine = [i for i, e in enumerate(events) if e.event_type in types]
            if not mine:
                continue
            verdicts = handle_batch(consumer, handler, [events[i] for i in mine])
            for i, handled in zip(mine, verdicts, strict=True):
                if handled.verdict is Verdict.FAILED:
                    failed = PublishResult(Outcome.FAILED, f"{consumer}: {handled.error}")
                    results[i] = _worse(results[i], failed)
                elif handled.verdict is Verdict.HELD:
                    results[i] = _worse(results[i], HELD)
        return results

    def publish(self, event: Event) -> None:
        raise_unless_published(self.publish_batch((event,))[0])


def _worse(a: PublishResult, b: PublishResult) -> PublishResult:
    """FAILED over HELD over PUBLISHED; two failures keep both errors."""
    if a.outcome is Outcome.FAILED and b.outcome is Outcome.FAILED:
        return PublishResult(Outcome.FAILED, f"{a.error}; {b.error}")
    return a if _RANK[a.outcome] >= _RANK[b.outcome] else b
