"""Outbox relay: publishes outbox rows in batches, in order, marks them published, retries
failures with backoff, and parks an event as dead after a bounded number of attempts (surfaced by
`paygrid check`).

One pass: one read of up to BATCH_SIZE due rows, one ``publish_batch`` (JetStream: pipelined,
acknowledgements awaited together), one UPDATE marking the published ones. Order per aggregate:
an aggregate with an event waiting out its backoff has none of its later events published, and
the bus holds back the rest of an aggregate behind a failure within the batch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, or_, select, update

from paygrid.bus.codec import envelope_from_bytes
from paygrid.bus.ports import Event, MessageBus, Outcome, PublishResult
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.leader import LeaderLock
from paygrid.storage.schema import outbox

log = logging.getLogger(__name__)

BATCH_SIZE = 256  # events a pass: one read, one publish_batch, one UPDATE
MAX_ATTEMPTS = 20
MAX_BACKOFF_S = 300

_unpublished = (outbox.c.published_at.is_(None), outbox.c.dead.is_(False))
DUE = (
    select(outbox)
    .where(
        *_unpublished,
        or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= bindparam("now")),
    )
    .order_by(outbox.c.seq)
    .limit(BATCH_SIZE)
)
BACKING_OFF = (  # aggregates with an event waiting out its backoff: their later events wait too
    select(outbox.c.aggregate_id)
    .distinct()
    .where(*_unpublished, outbox.c.next_attempt_at > bindparam("now"))
)


def row_to_event(row: Row[Any]) -> Event:
    return envelope_from_bytes(row.payload)


class OutboxRelay:
    def __init__(self, db: Database, bus: MessageBus, leader: LeaderLock | None = None) -> None:
        self._db = db
        self._bus = bus
        self._leader = leader
        self._lock = threading.Lock()  # one pass at a time in this process
        self.bus_available = True
        # Whether an event may be waiting out a backoff: only the leading relay records
        # failures, so after one look that finds none, none can appear until we record one
        # or lead anew (another leader may have recorded some meanwhile).
        self._may_back_off = True
        self._leading = False

    def pump(self) -> int:
        """Publish what is due; return how many events were published. Only the copy that
        holds the relay lock publishes: copies may run side by side as hot standbys."""
        if self._leader is not None and not self._leader.held():
            self._leading = False
            return 0
        if not self._leading:
            self._leading, self._may_back_off = True, True
        with self._lock:
            with self._db.read() as conn:
                now = utcnow()
                rows = conn.execute(DUE, {"now": now}).all()
                waiting = self._backing_off(conn, now) if rows else set()
            rows = [row for row in rows if row.aggregate_id not in waiting]
            if not rows:
                return 0
            results = self._bus.publish_batch([row_to_event(row) for row in rows])
            assert len(results) == len(rows), (len(results), len(rows))
            return self._settle(rows, results)

    def _backing_off(self, conn: Connection, now: datetime) -> set[str]:
        if not self._may_back_off:
            return set()
        waiting = set(conn.execute(BACKING_OFF, {"now": now}).scalars())
        self._may_back_off = bool(waiting)
        return waiting

    def _settle(self, rows: Sequence[Row[Any]], results: Sequence[PublishResult]) -> int:
        """Mark the published (one UPDATE), record the failures; the rest (held, bus
        unavailable) stays as it is for the next pass."""
        published = [row.seq for row, r in zip(rows, results, strict=True) if r.ok]
        failed = [
            (row, r.error)
            for row, r in zip(rows, results, strict=True)
            if r.outcome is Outcome.FAILED
        ]
        down = [r.error for r in results if r.outcome is Outcome.UNAVAILABLE]
        self._mark_published(published)
        self._record_failures(failed)
        if down:
            self._bus_down(down[0])
        elif published:
            self.bus_available = True
        return len(published)

    def _bus_down(self, error: str) -> None:
        if self.bus_available:
            log.warning("bus unavailable, events stay in the outbox: %s", error)
        self.bus_available = False

    def _mark_published(self, seqs: list[int]) -> None:
        """One write for the batch; a crash before it only means a redelivery (inbox drops it)."""
        if not seqs:
            return
        with self._db.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.seq.in_(seqs)).values(published_at=utcnow()))

    def _record_failures(self, failed: list[tuple[Row[Any], str]]) -> None:
        if not failed:
            return
        self._may_back_off = True
        with self._db.transaction() as conn:
            for row, error in failed:
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
