"""Notification consumer (event -> notification row), delivery worker, list and resend.

The worker claims due notifications and hands each to the delivery pool (notify/delivery.py),
which runs it as its own task under a total deadline: a round never waits for an attempt, and
one merchant's slow or dead endpoint holds at most MAX_IN_FLIGHT_PER_MERCHANT slots."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from paygrid.bus.codec import UndecodableEvent, decode
from paygrid.bus.inbox import first_deliveries
from paygrid.bus.ports import Event
from paygrid.kernel.clock import rfc3339, utcnow
from paygrid.kernel.ids import new_id
from paygrid.notify.delivery import DeliveryPool, Outcome, Poster
from paygrid.notify.domain import (
    DELIVERY_DEADLINE_S,
    MAX_ATTEMPTS,
    MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_PER_MERCHANT,
    REASON_CONNECTION_FAILED,
    REASON_TIMEOUT,
    REASONS,
    next_attempt_at,
    sign,
    status_reason,
)
from paygrid.notify.store import (
    RECORD_BATCH,
    BatchWriter,
    Result,
    claim_due,
    record_results,
    unclaim,
)
from paygrid.notify.url_policy import Network, NotifyTarget, check_url
from paygrid.payments.events import PaymentSucceeded, RefundFailed, RefundSucceeded
from paygrid.storage.database import Database
from paygrid.storage.schema import notification_attempts, notifications

log = logging.getLogger(__name__)
CONSUMER = "notify"
EVENT_TYPES = frozenset({PaymentSucceeded.TYPE, RefundSucceeded.TYPE, RefundFailed.TYPE})
BATCH = 50  # claimed in one statement at most
RESEND_WAIT_S = DELIVERY_DEADLINE_S + 30  # the attempt, then recording it

SecretLookup = Callable[[Connection, str], str]


@dataclass(frozen=True, slots=True)
class _Due:
    notify_id: str
    mchid: str
    url: str
    body: bytes
    secret: str


class NotificationNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Notice:
    """What the merchant is told of one event: ``data`` is the resource as its GET returns it;
    ``resource_id`` the payment it concerns (a refund's payment), as the merchant lists them."""

    mchid: str
    resource_id: str
    url: str
    data: dict[str, Any]


def notice_of(event: Event) -> Notice:
    """The notice of a typed event (the event types in EVENT_TYPES)."""
    if event.event_type == PaymentSucceeded.TYPE:
        payment = decode(event, PaymentSucceeded).payment
        return Notice(payment.mchid, payment.payment_id, payment.notify_url, payment.resource())
    for refund_event in (RefundSucceeded, RefundFailed):
        if event.event_type == refund_event.TYPE:
            refund = decode(event, refund_event).refund  # to its notify_url, else its payment's
            return Notice(refund.mchid, refund.payment_id, refund.deliver_to, refund.resource())
    raise UndecodableEvent(f"{event.event_id}: no notice for {event.event_type}")


class NotifyService:
    def __init__(
        self,
        db: Database,
        secret_for: SecretLookup,
        retry_scale: float = 1.0,
        cell: int = 0,
        allowed_networks: Sequence[Network] = (),
        poster: Poster | None = None,
    ) -> None:
        """``allowed_networks``: the exceptions to the notify_url policy
        (PAYGRID_NOTIFY_ALLOW_NETWORKS)."""
        self._db = db
        self._secret_for = secret_for
        self._scale = retry_scale
        self._cell = cell
        self._poster = poster or Poster(allowed_networks)
        self._pool = DeliveryPool(MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_MERCHANT)
        self._recorder = BatchWriter(self._record, RECORD_BATCH)

    @property
    def wake(self) -> threading.Event:
        """Set when there is work for the delivery loop: notifications were just queued, or a
        slot freed that a full merchant (or a full pool) was waiting for."""
        return self._pool.freed

    def check_url(self, url: str) -> NotifyTarget:
        """The notify_url policy, as payment create applies it; raises UrlRefused."""
        return check_url(url, self._poster.allowed)

    # --- consumer -------------------------------------------------------------------------
    def __call__(self, events: Sequence[Event]) -> None:
        """A batch of events -> notification rows (BatchHandler): one transaction, the inbox
        for the whole batch in one statement, the new rows in one executemany."""
        notices = [(event, notice_of(event)) for event in events]  # refuse before writing
        now = utcnow()
        with self._db.transaction() as conn:
            new = first_deliveries(conn, CONSUMER, [event.event_id for event in events])
            rows: list[dict[str, Any]] = []
            for event, notice in notices:
                if event.event_id in new:
                    new.discard(event.event_id)  # the same event twice in a batch: once
                    rows.append(self._notification_row(event, notice, now))
            if rows:
                conn.execute(insert(notifications), rows)
        if rows:
            self._pool.freed.set()  # new work: the claiming loop takes the batch at once
        for row in rows:
            log.info("notification %s queued for %s", row["notify_id"], row["resource_id"])

    def _notification_row(self, event: Event, notice: Notice, now: datetime) -> dict[str, Any]:
        notify_id = new_id("ntf", self._cell)
        body = json.dumps(
            {
                "id": notify_id,
                "type": event.event_type,
                "created_at": rfc3339(event.occurred_at),
                "data": notice.data,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return {
            "notify_id": notify_id,
            "event_id": event.event_id,
            "mchid": notice.mchid,
            "event_type": event.event_type,
            "resource_id": notice.resource_id,
            "url": notice.url,
            "body": body,
            "status": "PENDING",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }

    # --- worker ---------------------------------------------------------------------------
    def deliver_due(self) -> int:
        """Claim due notifications, as many as there are free slots, in one statement (one
        transaction with the merchants' signing keys), and start their attempts; return how
        many were started. Never waits for an attempt."""
        free = self._pool.free()
        if free <= 0:
            return 0
        now = utcnow()
        busy_ids, taken = self._pool.busy()
        with self._db.transaction() as conn:
            claimed = claim_due(conn, now, busy_ids, taken, min(BATCH, free))
            keys = {m: self._secret_for(conn, m) for m in {c.mchid for c in claimed}}
        spare: list[str] = []
        for c in claimed:
            if not self._pool.reserve(c.notify_id, c.mchid):  # a resend took the slot meanwhile
                spare.append(c.notify_id)
                continue
            due = _Due(c.notify_id, c.mchid, c.url, c.body.encode(), keys[c.mchid])
            self._pool.submit(due.notify_id, due.mchid, self._job(due, manual=False))
        if spare:
            with self._db.transaction() as conn:
                unclaim(conn, spare, now)
        return len(claimed) - len(spare)

    def _job(self, due: _Due, manual: bool) -> Callable[[], Coroutine[Any, Any, None]]:
        async def attempt() -> None:
            outcome = await self._poster.post(due.url, _headers(due), due.body)
            await asyncio.wrap_future(self._recorder.put(Result(due.notify_id, outcome, manual)))

        return attempt

    def _record(self, results: Sequence[Result]) -> None:
        """Record a batch of attempts' outcomes in one transaction."""
        now = utcnow()
        with self._db.transaction() as conn:
            recorded = record_results(conn, results, now, self._after)
        for r in recorded:
            if not r.result.outcome.ok:
                log.info(
                    "notification %s attempt %d failed: %s (%s)",
                    r.result.notify_id,
                    r.attempt_no,
                    r.result.outcome.reason,
                    r.result.outcome.detail or r.result.outcome.status,
                )

    def _after(
        self, outcome: Outcome, status: str, attempts: int, manual: bool, now: datetime
    ) -> dict[str, Any]:
        """After a failed attempt: the next one on the schedule, or FAILED when it ends (an
        acknowledged one delivers the notification: notify/store.py)."""
        assert not outcome.ok
        if status == "PENDING" and not manual:
            nxt = next_attempt_at(attempts, now, self._scale)
            return (
                {"status": "FAILED", "next_attempt_at": None}
                if nxt is None
                else {"next_attempt_at": nxt}
            )
        return {}  # a failed manual resend leaves the schedule as it was

    # --- merchant-facing ------------------------------------------------------------------
    def list_for(self, mchid: str, payment_id: str | None) -> list[dict[str, Any]]:
        with self._db.read() as conn:
            stmt = select(notifications).where(notifications.c.mchid == mchid)
            if payment_id:
                stmt = stmt.where(notifications.c.resource_id == payment_id)
            rows = conn.execute(stmt.order_by(notifications.c.created_at).limit(200)).all()
            return [self._view(conn, row) for row in rows]

    def get(self, notify_id: str, mchid: str | None) -> dict[str, Any]:
        with self._db.read() as conn:
            row = conn.execute(
                select(notifications).where(notifications.c.notify_id == notify_id)
            ).first()
            if row is None or (mchid is not None and row.mchid != mchid):
                raise NotificationNotFound(notify_id)
            return self._view(conn, row)

    def resend(self, notify_id: str, mchid: str | None) -> dict[str, Any]:
        """Deliver once more, now, with the same id and body (console, CLI or merchant)."""
        self.get(notify_id, mchid)
        with self._db.read() as conn:
            row = conn.execute(
                select(notifications).where(notifications.c.notify_id == notify_id)
            ).one()
            secret = self._secret_for(conn, row.mchid)
        due = _Due(row.notify_id, row.mchid, row.url, row.body.encode(), secret)
        self._pool.reserve(due.notify_id, due.mchid, force=True)
        self._pool.submit(due.notify_id, due.mchid, self._job(due, manual=True)).result(
            RESEND_WAIT_S
        )
        return self.get(notify_id, mchid)

    def _view(self, conn: Connection, row: Row[Any]) -> dict[str, Any]:
        attempts = conn.execute(
            select(notification_attempts)
            .where(notification_attempts.c.notify_id == row.notify_id)
            .order_by(notification_attempts.c.attempt_no)
        ).all()
        return {
            "id": row.notify_id,
            "type": row.event_type,
            "payment_id": row.resource_id,
            "url": row.url,
            "status": row.status,
            "attempts": row.attempts,
            "max_attempts": MAX_ATTEMPTS,
            "next_attempt_at": rfc3339(row.next_attempt_at) if row.next_attempt_at else None,
            "created_at": rfc3339(row.created_at),
            "delivered_at": rfc3339(row.delivered_at) if row.delivered_at else None,
            "deliveries": [
                {
                    "attempt": a.attempt_no,
                    "at": rfc3339(a.at),
                    "http_status": a.http_status,
                    "error": _coarse(a.http_status, a.error),
                    "duration_ms": a.duration_ms,
                    "manual": a.manual,
                }
                for a in attempts
            ],
        }

    def close(self) -> None:
        self._pool.close(self._poster.aclose)
        self._recorder.close()


def _coarse(http_status: int | None, error: str | None) -> str | None:
    """The reason the merchant may see; attempts recorded before reasons were coarse carry
    exception text (ports, "connection refused"), which is not shown."""
    if error is None or error in REASONS or error.startswith("http_status_"):
        return error if error or http_status is None else status_reason(http_status)
    return REASON_TIMEOUT if "Timeout" in error else REASON_CONNECTION_FAILED


def _headers(due: _Due) -> dict[str, str]:
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    return {
        "Content-Type": "application/json",
        "Paygrid-Notify-Id": due.notify_id,
        "Paygrid-Timestamp": timestamp,
        "Paygrid-Nonce": nonce,
        "Paygrid-Signature": sign(due.secret, timestamp, nonce, due.body),
        "User-Agent": "paygrid-notify/1",
    }
