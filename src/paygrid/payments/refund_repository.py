"""Refund persistence. A refund is stored with its payment (payments/repository.py calls
:func:`save_refunds` inside the payment's versioned update), so the reservation on the payment
and the refund row commit together; the lookups here find the payment a refund belongs to."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from paygrid.channels.ports import RefundTrade
from paygrid.kernel.clock import utcnow
from paygrid.payments.refunds import Refund, RefundDecision, RefundItem, RefundStatus
from paygrid.storage.schema import refund_callbacks, refunds


class ConcurrentRefundUpdate(Exception):
    """The refund row changed since it was read (the payment's version should have caught it)."""


def _refund(row: Row[Any]) -> Refund:
    items = tuple(RefundItem(**i) for i in json.loads(row.items)) if row.items else ()
    return Refund(
        refund_id=row.refund_id,
        payment_id=row.payment_id,
        order_id=row.order_id,
        channel=row.channel,
        channel_ref=row.channel_ref,
        mchid=row.mchid,
        out_refund_no=row.out_refund_no,
        amount=row.amount,
        currency=row.currency,
        reason=row.reason,
        notify_url=row.notify_url,
        items=items,
        request_hash=row.request_hash,
        status=RefundStatus(row.status),
        channel_refund_no=row.channel_refund_no,
        channel_state=row.channel_state,
        created_at=row.created_at,
        updated_at=row.updated_at,
        succeeded_at=row.succeeded_at,
        failed_at=row.failed_at,
        cause=row.cause,
        version=row.version,
    )


def _changing(r: Refund) -> dict[str, Any]:
    return {
        "status": r.status.value,
        "channel_refund_no": r.channel_refund_no,
        "channel_state": r.channel_state,
        "cause": r.cause,
        "updated_at": r.updated_at,
        "succeeded_at": r.succeeded_at,
        "failed_at": r.failed_at,
    }


def refunds_of(conn: Connection, payment_id: str) -> tuple[Refund, ...]:
    rows = conn.execute(
        select(refunds)
        .where(refunds.c.payment_id == payment_id)
        .order_by(refunds.c.created_at, refunds.c.refund_id)
    ).all()
    return tuple(_refund(r) for r in rows)


def save_refunds(conn: Connection, before: tuple[Refund, ...], after: tuple[Refund, ...]) -> None:
    """Insert new refunds, update changed ones (compare-and-set on their version); a refund is
    never deleted."""
    old = {r.refund_id: r for r in before}
    assert set(old) <= {r.refund_id for r in after}, "a refund disappeared"
    for refund in after:
        was = old.get(refund.refund_id)
        if was is None:
            _insert(conn, refund)
        elif was != refund:
            done = conn.execute(
                update(refunds)
                .where(refunds.c.refund_id == refund.refund_id, refunds.c.version == was.version)
                .values(version=was.version + 1, **_changing(refund))
            )
            if done.rowcount != 1:
                raise ConcurrentRefundUpdate(refund.refund_id)


def _insert(conn: Connection, r: Refund) -> None:
    items = [{"sku": i.sku, "quantity": i.quantity} for i in r.items]
    conn.execute(
        insert(refunds).values(
            refund_id=r.refund_id,
            payment_id=r.payment_id,
            order_id=r.order_id,
            channel=r.channel,
            channel_ref=r.channel_ref,
            mchid=r.mchid,
            out_refund_no=r.out_refund_no,
            amount=r.amount,
            currency=r.currency,
            reason=r.reason,
            notify_url=r.notify_url,
            items=json.dumps(items, ensure_ascii=False) if items else None,
            request_hash=r.request_hash,
            created_at=r.created_at,
            version=r.version,
            **_changing(r),
        )
    )


# --- lookups ----------------------------------------------------------------------------------
def get(conn: Connection, refund_id: str) -> Refund | None:
    row = conn.execute(select(refunds).where(refunds.c.refund_id == refund_id)).first()
    return _refund(row) if row else None


def by_out_refund_no(conn: Connection, mchid: str, out_refund_no: str) -> Refund | None:
    row = conn.execute(
        select(refunds).where(refunds.c.mchid == mchid, refunds.c.out_refund_no == out_refund_no)
    ).first()
    return _refund(row) if row else None


def by_channel_ref(conn: Connection, channel: str, channel_ref: str) -> Refund | None:
    """The refund a channel report names (by our refund number at that channel)."""
    row = conn.execute(
        select(refunds).where(refunds.c.channel == channel, refunds.c.channel_ref == channel_ref)
    ).first()
    return _refund(row) if row else None


def processing_since(conn: Connection, before: datetime, limit: int) -> Sequence[str]:
    """Refunds PROCESSING last touched before ``before``: candidates for 补单."""
    rows = conn.execute(
        select(refunds.c.refund_id)
        .where(refunds.c.status == RefundStatus.PROCESSING.value, refunds.c.updated_at <= before)
        .order_by(refunds.c.updated_at)
        .limit(limit)
    ).all()
    return [r.refund_id for r in rows]


def record_callback(
    conn: Connection,
    channel: str,
    notify_id: str,
    refund: Refund,
    trade: RefundTrade,
    decision: RefundDecision,
) -> bool:
    """Remember what the channel said about a refund and what became of it; False if this
    notify id was already handled for this refund (a redelivery)."""
    key = (
        refund_callbacks.c.channel == channel,
        refund_callbacks.c.notify_id == notify_id,
        refund_callbacks.c.refund_id == refund.refund_id,
    )
    if conn.execute(select(refund_callbacks.c.outcome).where(*key)).first() is not None:
        return False
    said = trade.state.value if trade.state is not None else (trade.raw_state or "MISSING")
    amount = trade.amount
    conn.execute(
        insert(refund_callbacks).values(
            channel=channel,
            notify_id=notify_id[:128],
            refund_id=refund.refund_id,
            payment_id=refund.payment_id,
            refund_state=said[:16],
            outcome=decision.outcome.value,
            amount=amount.minor if amount is not None else None,
            currency=amount.currency if amount is not None else None,
            detail=decision.problem[:256] or None,
            received_at=utcnow(),
        )
    )
    return True
