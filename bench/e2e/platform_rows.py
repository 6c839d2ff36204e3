"""What the platform's own rows and API say after a phase: backlog counts, where a payment or a
refund waited (from the platform's timestamps: UTC wall clock on the same machine), and the
statuses read back over HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import spread
from sqlalchemy import Connection, and_, func, select, text

from e2e.load import Sample
from e2e.receiver import Stamps
from paygrid.payments.events import PaymentSucceeded, RefundSucceeded
from paygrid.storage.schema import (
    channel_callbacks,
    ledger_vouchers,
    notifications,
    outbox,
    refund_callbacks,
    refunds,
)

if TYPE_CHECKING:
    from paygrid.ops.running import RunningPlatform

DRAIN_POLL_S = 0.2
READ_BACK_THREADS = 4

COUNTS = {
    "outbox_unpublished": "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND NOT dead",
    "notifications_undelivered": "SELECT COUNT(*) FROM notifications WHERE status <> 'DELIVERED'",
    "payments_success": "SELECT COUNT(*) FROM payments WHERE status = 'SUCCESS'",
    "payments_paying": "SELECT COUNT(*) FROM payments WHERE status = 'PAYING'",
    "refunds_success": "SELECT COUNT(*) FROM refunds WHERE status = 'SUCCESS'",
    "refunds_processing": "SELECT COUNT(*) FROM refunds WHERE status = 'PROCESSING'",
    "capture_vouchers": "SELECT COUNT(*) FROM ledger_vouchers WHERE kind = 'capture'",
    "refund_vouchers": "SELECT COUNT(*) FROM ledger_vouchers WHERE kind = 'refund'",
    "channel_callbacks": "SELECT COUNT(*) FROM channel_callbacks",
    "refund_callbacks": "SELECT COUNT(*) FROM refund_callbacks",
    "notification_attempts": "SELECT COUNT(*) FROM notification_attempts",
}


def db_work(running: RunningPlatform) -> dict[str, float] | None:
    """Statements and transactions so far on every paygrid process; None where not every
    process has an operations URL here (prod)."""
    return running.db_work() if running.more_ops_urls else None


def db_work_per(before: dict[str, float] | None, after: dict[str, float] | None, n: int) -> Any:
    if before is None or after is None or n == 0:
        return None
    per = {k: (after[k] - before[k]) / n for k in after}
    return {
        "transactions": round(per["read"] + per["write"], 2),
        "of_them_read_only": round(per["read"], 2),
        "statements": round(per["statements"], 2),
        "write_slot_held_ms": round(per["write_held_s"] * 1000, 2),  # SQLite's one writer
    }


def db_counts(running: RunningPlatform) -> dict[str, int]:
    db = running.database()
    try:
        with db.transaction() as conn:
            return {k: int(conn.execute(text(q)).scalar_one()) for k, q in COUNTS.items()}
    finally:
        db.dispose()


def wait_drained(running: RunningPlatform, timeout: float) -> dict[str, int]:
    """Until the outbox is published and every notification delivered, at most ``timeout``."""
    deadline = time.monotonic() + timeout
    counts = db_counts(running)
    while time.monotonic() < deadline:
        if counts["outbox_unpublished"] == 0 and counts["notifications_undelivered"] == 0:
            break
        time.sleep(DRAIN_POLL_S)
        counts = db_counts(running)
    return counts


def _ts(value: datetime) -> float:
    return value.timestamp()


def _event_lags(conn: Connection, event_type: str) -> dict[str, list[float]]:
    """Every event of that type: outbox row -> published (the relay), and its merchant
    notification row -> delivered (the notifier)."""
    published = conn.execute(
        select(outbox.c.created_at, outbox.c.published_at).where(
            outbox.c.event_type == event_type, outbox.c.published_at.is_not(None)
        )
    )
    delivered = conn.execute(
        select(notifications.c.created_at, notifications.c.delivered_at).where(
            notifications.c.event_type == event_type, notifications.c.delivered_at.is_not(None)
        )
    )
    return {
        "event -> published (relay)": [_ts(b) - _ts(a) for a, b in published],
        "notification -> delivered": [_ts(b) - _ts(a) for a, b in delivered],
    }


def payment_stages(
    running: RunningPlatform, samples: list[Sample], notified: Stamps
) -> dict[str, dict[str, float]]:
    """Where a payment waits after the payer paid: the channel's callback, the relay, the
    ledger, the notifier."""
    paid = {s.ref: s.start_wall + s.create_s + s.pay_s for s in samples}
    event_type = PaymentSucceeded.TYPE
    db = running.database()
    try:
        with db.transaction() as conn:
            callback = dict(
                conn.execute(
                    select(channel_callbacks.c.payment_id, channel_callbacks.c.received_at)
                )
                .tuples()
                .all()
            )
            booked = conn.execute(
                select(outbox.c.created_at, ledger_vouchers.c.created_at)
                .join(
                    ledger_vouchers,
                    and_(
                        ledger_vouchers.c.kind == "capture",
                        ledger_vouchers.c.business_ref == outbox.c.aggregate_id,
                    ),
                )
                .where(outbox.c.event_type == event_type)
            ).all()
            lags = _event_lags(conn, event_type)
    finally:
        db.dispose()
    stages = {
        "pay -> callback applied": [_ts(callback[p]) - paid[p] for p in paid if p in callback],
        "event -> capture voucher (ledger)": [_ts(b) - _ts(a) for a, b in booked],
        **lags,
        "pay -> merchant notified": [notified[p][1] - paid[p] for p in paid if p in notified],
    }
    return {name: spread(v) for name, v in stages.items()}


def refund_stages(running: RunningPlatform, samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Where a refund waits after the merchant asked: the channel (its answer, or its refund
    callback where the channel sends one), the ledger's voucher, the relay, the notifier."""
    asked = {s.ref: s.start_wall for s in samples}
    db = running.database()
    try:
        with db.transaction() as conn:
            applied = dict(
                conn.execute(
                    select(refunds.c.refund_id, refunds.c.updated_at).where(
                        refunds.c.status == "SUCCESS"
                    )
                )
                .tuples()
                .all()
            )
            callback = dict(
                conn.execute(
                    select(
                        refund_callbacks.c.refund_id, func.min(refund_callbacks.c.received_at)
                    ).group_by(refund_callbacks.c.refund_id)
                )
                .tuples()
                .all()
            )
            voucher = dict(
                conn.execute(
                    select(ledger_vouchers.c.business_ref, ledger_vouchers.c.created_at).where(
                        ledger_vouchers.c.kind == "refund"
                    )
                )
                .tuples()
                .all()
            )
            lags = _event_lags(conn, RefundSucceeded.TYPE)
    finally:
        db.dispose()
    stages = {
        "create -> channel's refund callback": [
            _ts(callback[r]) - asked[r] for r in asked if r in callback
        ],
        "create -> SUCCESS applied": [_ts(applied[r]) - asked[r] for r in asked if r in applied],
        "SUCCESS -> refund voucher (ledger)": [
            _ts(voucher[r]) - _ts(applied[r]) for r in asked if r in voucher and r in applied
        ],
        **lags,
    }
    return {name: spread(v) for name, v in stages.items()}


def statuses_over_http(running: RunningPlatform, path: str, ids: list[str]) -> dict[str, int]:
    """GET ``path``/{id} (/v1/payments or /v1/refunds) for each id; how many of each status."""
    seen: dict[str, int] = {}
    client = running.client()

    def status(ref: str) -> str:
        response = client.request("GET", f"{path}/{ref}")
        if response.status_code != 200:
            return f"HTTP_{response.status_code}"
        body: dict[str, Any] = response.json()
        return str(body.get("status"))

    try:
        with ThreadPoolExecutor(READ_BACK_THREADS) as pool:
            for s in pool.map(status, ids):
                seen[s] = seen.get(s, 0) + 1
    finally:
        client.http.close()
    return seen
