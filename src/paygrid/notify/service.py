"""Notification consumer (event -> notification row), delivery worker, list and resend."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Row, insert, select, update

from paygrid.bus.inbox import first_delivery
from paygrid.bus.ports import Event
from paygrid.kernel.clock import rfc3339, utcnow
from paygrid.kernel.ids import new_id
from paygrid.notify.domain import (
    DELIVERY_TIMEOUT_S,
    MAX_ATTEMPTS,
    next_attempt_at,
    sign,
)
from paygrid.storage.database import Database
from paygrid.storage.schema import notification_attempts, notifications

log = logging.getLogger(__name__)
CONSUMER = "notify"
EVENT_TYPES = frozenset({"payment.succeeded"})
CLAIM_LEASE_S = 30  # a claimed notification is not picked again for this long
BATCH = 50
WORKERS = 4

SecretLookup = Callable[[Connection, str], str]


class NotificationNotFound(Exception):
    pass


class NotifyService:
    def __init__(
        self,
        db: Database,
        secret_for: SecretLookup,
        retry_scale: float = 1.0,
        cell: int = 0,
        http: httpx.Client | None = None,
    ) -> None:
        self._db = db
        self._secret_for = secret_for
        self._scale = retry_scale
        self._cell = cell
        self._http = http or httpx.Client(timeout=DELIVERY_TIMEOUT_S, follow_redirects=False)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="notify")

    # --- consumer -------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        resource = dict(event.payload["payment"])
        with self._db.transaction() as conn:
            if not first_delivery(conn, CONSUMER, event.event_id):
                return
            notify_id = new_id("ntf", self._cell)
            now = utcnow()
            body = json.dumps(
                {
                    "id": notify_id,
                    "type": event.event_type,
                    "created_at": rfc3339(event.occurred_at),
                    "data": resource,
                },
                separators=(",", ":"),
                ensure_ascii=False,
            )
            conn.execute(
                insert(notifications).values(
                    notify_id=notify_id,
                    event_id=event.event_id,
                    mchid=resource["mchid"],
                    event_type=event.event_type,
                    resource_id=resource["payment_id"],
                    url=resource["notify_url"],
                    body=body,
                    status="PENDING",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        log.info("notification %s queued for %s", notify_id, resource["payment_id"])

    # --- worker ---------------------------------------------------------------------------
    def deliver_due(self) -> int:
        """Claim due notifications and deliver them in parallel; return how many were tried."""
        now = utcnow()
        with self._db.transaction() as conn:
            rows = conn.execute(
                select(notifications.c.notify_id)
                .where(notifications.c.status == "PENDING", notifications.c.next_attempt_at <= now)
                .order_by(notifications.c.next_attempt_at)
                .limit(BATCH)
            ).all()
            claimed = []
            for row in rows:
                res = conn.execute(
                    update(notifications)
                    .where(
                        notifications.c.notify_id == row.notify_id,
                        notifications.c.status == "PENDING",
                        notifications.c.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=now + timedelta(seconds=CLAIM_LEASE_S))
                )
                if res.rowcount == 1:
                    claimed.append(row.notify_id)
        list(self._pool.map(lambda nid: self._attempt(nid, manual=False), claimed))
        return len(claimed)

    def _attempt(self, notify_id: str, manual: bool) -> None:
        with self._db.transaction() as conn:
            row = conn.execute(
                select(notifications).where(notifications.c.notify_id == notify_id)
            ).first()
            if row is None:
                raise NotificationNotFound(notify_id)
            secret = self._secret_for(conn, row.mchid)
        status, error, took_ms = self._post(row.url, row.body.encode(), row.notify_id, secret)
        ok = status is not None and 200 <= status < 300
        now = utcnow()
        with self._db.transaction() as conn:
            current = conn.execute(
                select(notifications).where(notifications.c.notify_id == notify_id)
            ).first()
            assert current is not None
            attempts = current.attempts + 1
            conn.execute(
                insert(notification_attempts).values(
                    notify_id=notify_id,
                    attempt_no=attempts,
                    at=now,
                    http_status=status,
                    error=error,
                    duration_ms=took_ms,
                    manual=manual,
                )
            )
            if ok:
                values: dict[str, Any] = {
                    "status": "DELIVERED",
                    "delivered_at": now,
                    "next_attempt_at": None,
                }
            elif current.status == "PENDING" and not manual:
                nxt = next_attempt_at(attempts, now, self._scale)
                values = (
                    {"status": "FAILED", "next_attempt_at": None}
                    if nxt is None
                    else {"next_attempt_at": nxt}
                )
            else:
                values = {}  # a failed manual resend leaves the schedule as it was
            conn.execute(
                update(notifications)
                .where(notifications.c.notify_id == notify_id)
                .values(attempts=attempts, **values)
            )
        if not ok:
            log.info("notification %s attempt %d failed: %s", notify_id, attempts, error or status)

    def _post(
        self, url: str, body: bytes, notify_id: str, secret: str
    ) -> tuple[int | None, str | None, int]:
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        headers = {
            "Content-Type": "application/json",
            "Paygrid-Notify-Id": notify_id,
            "Paygrid-Timestamp": timestamp,
            "Paygrid-Nonce": nonce,
            "Paygrid-Signature": sign(secret, timestamp, nonce, body),
            "User-Agent": "paygrid-notify/1",
        }
        started = time.perf_counter()
        try:
            response = self._http.post(url, content=body, headers=headers)
            return response.status_code, None, int((time.perf_counter() - started) * 1000)
        except httpx.HTTPError as exc:
            return (
                None,
                f"{type(exc).__name__}: {exc}"[:500],
                int((time.perf_counter() - started) * 1000),
            )

    # --- merchant-facing ------------------------------------------------------------------
    def list_for(self, mchid: str, payment_id: str | None) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            stmt = select(notifications).where(notifications.c.mchid == mchid)
            if payment_id:
                stmt = stmt.where(notifications.c.resource_id == payment_id)
            rows = conn.execute(stmt.order_by(notifications.c.created_at).limit(200)).all()
            return [self._view(conn, row) for row in rows]

    def get(self, notify_id: str, mchid: str | None) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute(
                select(notifications).where(notifications.c.notify_id == notify_id)
            ).first()
            if row is None or (mchid is not None and row.mchid != mchid):
                raise NotificationNotFound(notify_id)
            return self._view(conn, row)

    def resend(self, notify_id: str, mchid: str | None) -> dict[str, Any]:
        """Deliver once more, now, with the same id and body (console, CLI or merchant)."""
        self.get(notify_id, mchid)
        self._attempt(notify_id, manual=True)
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
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                    "manual": a.manual,
                }
                for a in attempts
            ],
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()
