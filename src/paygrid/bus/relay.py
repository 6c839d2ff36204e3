"""Outbox relay: publishes outbox rows in order, marks them published, retries with backoff,
and parks an event as dead after a bounded number of attempts (surfaced by `paygrid check`)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, or_, select, update

from paygrid.bus.codec import envelope_from_bytes
from paygrid.bus.ports import BusUnavailable, Event, MessageBus
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.leader import LeaderLock
from paygrid.storage.schema import outbox

log = logging.getLogger(__name__)

BATCH_SIZE = 100
MAX_ATTEMPTS = 20
MAX_BACKOFF_S = 300


def row_to_event(row: Row[Any]) -> Event:
    return envelope_from_bytes(row.payload)


class OutboxRelay:
    def __init__(self, db: Database, bus: MessageBus, leader: LeaderLock | None = None) -> None:
        self._db = db
        self._bus = bus
        self._leader = leader
        self._lock = threading.Lock()  # one pass at a time in this process
        self.bus_available = True

    def pump(self) -> int:
        """Publish what is due; return how many events were published. Only the copy that
        holds the relay lock publishes: copies may run side by side as hot standbys."""
        if self._leader is not None and not self._leader.held():
            return 0
        with self._lock:
            now = utcnow()
            with self._db.read() as conn:
                rows = conn.execute(
                    select(outbox)
                    .where(
                        outbox.c.published_at.is_(None),
                        outbox.c.dead.is_(False),
                        or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
                    )
                    .order_by(outbox.c.seq)
                    .limit(BATCH_SIZE)
                ).all()
            published: list[str] = []
            blocked: set[str] = set()  # keep order per aggregate: skip after a failure
            for row in rows:
                if row.aggregate_id in blocked:
                    continue
                try:
                    ok = self._publish_one(row)
                except BusUnavailable as exc:
                    self._bus_down(exc)
                    break  # the rest waits in the outbox for the bus to come back
                if ok:
                    published.append(row.event_id)
                else:
                    blocked.add(row.aggregate_id)
            self._mark_published(published)
            return len(published)

    def _publish_one(self, row: Row[Any]) -> bool:
        try:
            self._bus.publish(row_to_event(row))
        except BusUnavailable:
            raise
        except Exception as exc:
            self._record_failure(row, str(exc))
            return False
        self.bus_available = True
        return True

    def _bus_down(self, exc: BusUnavailable) -> None:
        if self.bus_available:
            log.warning("bus unavailable, events stay in the outbox: %s", exc)
        self.bus_available = False

    def _mark_published(self, event_ids: list[str]) -> None:
        """One write for the batch; a crash before it only means a redelivery (inbox drops it)."""
        if not event_ids:
            return
        with self._db.transaction() as conn:
            conn.execute(
                update(outbox).where(outbox.c.event_id.in_(event_ids)).values(published_at=utcnow())
            )

    def _record_failure(self, row: Row[Any], error: str) -> None:
        attempts = int(row.attempts) + 1
        dead = attempts >= MAX_ATTEMPTS
        delay = min(MAX_BACKOFF_S, 2 ** min(attempts, 9))
        log.warning(
            "event %s delivery failed (attempt %d%s): %s",
            row.event_id,
            attempts,
            ", dead-lettered" if dead else "",
            error,
        )
        with self._db.transaction() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.seq == row.seq)
                .values(
                    attempts=attempts,
                    last_error=error[:2000],
                    dead=dead,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                )
            )
