"""Handing a batch of events to a consumer's :data:`BatchHandler`, the way both bus adapters do.

The whole batch goes to the handler at once (one transaction). If that raises, the batch was
rolled back as a whole, and each event is handed on again alone, in order, so that only the
events that fail on their own fail (a poison message fails, then dead-letters, alone). An
aggregate whose event failed has its later events of the batch HELD (not handed on in this
pass), which keeps each consumer's order per aggregate; an event on its last chance is tried
alone all the same, so holding never makes it run out of deliveries unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from paygrid.bus.ports import BatchHandler, Event
from paygrid.kernel import context

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500


class Verdict(Enum):
    DONE = "done"  # processed (or a redelivery the inbox dropped): acknowledge
    FAILED = "failed"  # failed alone: the bus's failure path (backoff, dead letter)
    HELD = "held"  # behind a failed event of its aggregate: not handed on in this pass


@dataclass(frozen=True, slots=True)
class Handled:
    verdict: Verdict
    error: str = ""


DONE = Handled(Verdict.DONE)
HELD = Handled(Verdict.HELD)


def handle_batch(
    consumer: str,
    handler: BatchHandler,
    events: Sequence[Event],
    last_chance: Sequence[bool] | None = None,
) -> list[Handled]:
    """One verdict per event of ``events``, in order. ``last_chance[i]``: the bus will not
    deliver event i again, so it is never held."""
    if not events:
        return []
    try:
        with _request_ids(events):
            handler(events)
        return [DONE] * len(events)
    except Exception as exc:
        if len(events) == 1:
            log.warning(
                "consumer %s failed on %s: %s", consumer, events[0].event_id, exc, exc_info=True
            )
            return [Handled(Verdict.FAILED, _describe(exc))]
        log.warning(
            "consumer %s failed on a batch of %d (%s); handing them on one at a time",
            consumer,
            len(events),
            _describe(exc),
        )
    return _one_at_a_time(consumer, handler, events, last_chance)


def _one_at_a_time(
    consumer: str,
    handler: BatchHandler,
    events: Sequence[Event],
    last_chance: Sequence[bool] | None,
) -> list[Handled]:
    out: list[Handled] = []
    blocked: set[str] = set()
    for i, event in enumerate(events):
        final = bool(last_chance and last_chance[i])
        if event.aggregate_id in blocked and not final:
            out.append(HELD)
            continue
        try:
            with _request_ids((event,)):
                handler((event,))
        except Exception as exc:
            log.warning(
                "consumer %s failed on %s: %s", consumer, event.event_id, exc, exc_info=True
            )
            out.append(Handled(Verdict.FAILED, _describe(exc)))
            blocked.add(event.aggregate_id)
            continue
        out.append(DONE)
    return out


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


@contextmanager
def _request_ids(events: Sequence[Event]) -> Iterator[None]:
    """The request id of the events for the logs, when they share one."""
    ids = {e.request_id for e in events}
    token = context.request_id.set(ids.pop() if len(ids) == 1 else None)
    try:
        yield
    finally:
        context.request_id.reset(token)
