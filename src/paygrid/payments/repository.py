"""Payment persistence. Updates carry the version they read (optimistic lock) and are
recorded with their transition, so no status change goes unexplained."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from paygrid.channels.ports import PayerAction, Trade
from paygrid.kernel.clock import utcnow
from paygrid.kernel.money import Money
from paygrid.payments import refund_repository
from paygrid.payments.domain import ChannelDecision, Discount, Item, Payment, PaymentStatus
from paygrid.payments.orders import ChannelOrder, OrderStatus
from paygrid.payments.refunds import Refund
from paygrid.storage.schema import (
    channel_callbacks,
    channel_orders,
    payment_transitions,
    payments,
)


class ConcurrentUpdate(Exception):
    """Somebody else changed the payment since we read it; the caller retries from the top."""


def _order(row: Row[Any]) -> ChannelOrder:
    action = PayerAction.from_json(json.loads(row.payer_action)) if row.payer_action else None
    return ChannelOrder(
        order_id=row.order_id,
        payment_id=row.payment_id,
        channel=row.channel,
        method=row.method,
        channel_ref=row.channel_ref,
        status=OrderStatus(row.status),
        payer_action=action,
        channel_trade_no=row.channel_trade_no,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _order_values(o: ChannelOrder) -> dict[str, Any]:
    action = o.payer_action
    return {
        "status": o.status.value,
        "payer_action": json.dumps(action.to_json(), ensure_ascii=False) if action else None,
        "channel_trade_no": o.channel_trade_no,
        "updated_at": o.updated_at,
    }


def _orders_of(conn: Connection, payment_id: str) -> tuple[ChannelOrder, ...]:
    rows = conn.execute(
        select(channel_orders)
        .where(channel_orders.c.payment_id == payment_id)
        .order_by(channel_orders.c.created_at, channel_orders.c.order_id)
    ).all()
    return tuple(_order(r) for r in rows)


def _payment(
    row: Row[Any], orders: tuple[ChannelOrder, ...] = (), refunds: tuple[Refund, ...] = ()
) -> Payment:
    items = tuple(Item(**i) for i in json.loads(row.items)) if row.items else ()
    discounts = tuple(Discount(**d) for d in json.loads(row.discounts)) if row.discounts else ()
    return Payment(
        payment_id=row.payment_id,
        mchid=row.mchid,
        out_trade_no=row.out_trade_no,
        amount=row.amount,
        currency=row.currency,
        description=row.description,
        notify_url=row.notify_url,
        return_url=row.return_url,
        method=row.method,
        status=PaymentStatus(row.status),
        expire_at=row.expire_at,
        attach=row.attach,
        items=items,
        discounts=discounts,
        request_hash=row.request_hash,
        refunded_amount=row.refunded_amount,
        paid_at=row.paid_at,
        closed_at=row.closed_at,
        cashier_token=row.cashier_token,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        confirmed_amount=(
            Money(row.confirmed_amount, row.confirmed_currency)
            if row.confirmed_amount is not None and row.confirmed_currency is not None
            else None
        ),
        orders=orders,
        refunding_amount=row.refunding_amount,
        refunds=refunds,
    )


def add(conn: Connection, p: Payment) -> None:
    conn.execute(
        insert(payments).values(
            payment_id=p.payment_id,
            mchid=p.mchid,
            out_trade_no=p.out_trade_no,
            amount=p.amount,
            currency=p.currency,
            description=p.description,
            notify_url=p.notify_url,
            return_url=p.return_url,
            method=p.method,
            status=p.status.value,
            expire_at=p.expire_at,
            attach=p.attach,
            items=json.dumps([_item(i) for i in p.items]) if p.items else None,
            discounts=json.dumps([_discount(d) for d in p.discounts]) if p.discounts else None,
            request_hash=p.request_hash,
            refunded_amount=p.refunded_amount,
            refunding_amount=p.refunding_amount,
            paid_at=p.paid_at,
            closed_at=p.closed_at,
            cashier_token=p.cashier_token,
            created_at=p.created_at,
            updated_at=p.updated_at,
            version=p.version,
            **_confirmed(p),
        )
    )
    _save_orders(conn, (), p.orders)
    refund_repository.save_refunds(conn, (), p.refunds)


def _save_orders(
    conn: Connection, before: tuple[ChannelOrder, ...], after: tuple[ChannelOrder, ...]
) -> None:
    """Insert new attempts, update changed ones; an attempt is never deleted."""
    old = {o.order_id: o for o in before}
    assert set(old) <= {o.order_id for o in after}, "a channel order disappeared"
    for order in after:
        if order.order_id not in old:
            conn.execute(
                insert(channel_orders).values(
                    order_id=order.order_id,
                    payment_id=order.payment_id,
                    channel=order.channel,
                    method=order.method,
                    channel_ref=order.channel_ref,
                    created_at=order.created_at,
                    **_order_values(order),
                )
            )
        elif old[order.order_id] != order:
            conn.execute(
                update(channel_orders)
                .where(channel_orders.c.order_id == order.order_id)
                .values(**_order_values(order))
            )


def _confirmed(p: Payment) -> dict[str, Any]:
    paid = p.confirmed_amount
    return {
        "confirmed_amount": paid.minor if paid is not None else None,
        "confirmed_currency": paid.currency if paid is not None else None,
    }


def _item(i: Item) -> dict[str, Any]:
    return {"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_amount": i.unit_amount}


def _discount(d: Discount) -> dict[str, Any]:
    return {"name": d.name, "amount": d.amount}


def get(conn: Connection, payment_id: str, *, for_update: bool = False) -> Payment | None:
    stmt = select(payments).where(payments.c.payment_id == payment_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return _loaded(conn, row) if row else None


def get_by_out_trade_no(conn: Connection, mchid: str, out_trade_no: str) -> Payment | None:
    row = conn.execute(
        select(payments).where(payments.c.mchid == mchid, payments.c.out_trade_no == out_trade_no)
    ).first()
    return _loaded(conn, row) if row else None


def _loaded(conn: Connection, row: Row[Any]) -> Payment:
    """The payment with its channel orders and its refunds."""
    paid = row.status == PaymentStatus.SUCCESS.value  # only a paid payment has refunds
    refunds = refund_repository.refunds_of(conn, row.payment_id) if paid else ()
    return _payment(row, _orders_of(conn, row.payment_id), refunds)


def payment_of_order(conn: Connection, channel: str, channel_ref: str) -> str | None:
    """The payment an order of ours at ``channel`` belongs to (a callback names the order)."""
    found: str | None = conn.execute(
        select(channel_orders.c.payment_id).where(
            channel_orders.c.channel == channel, channel_orders.c.channel_ref == channel_ref
        )
    ).scalar()
    return found


def save_change(conn: Connection, before: Payment, after: Payment, cause: str) -> None:
    """Store ``after`` if the row is still at ``before.version``; record the transition."""
    result = conn.execute(
        update(payments)
        .where(payments.c.payment_id == before.payment_id, payments.c.version == before.version)
        .values(
            status=after.status.value,
            paid_at=after.paid_at,
            closed_at=after.closed_at,
            updated_at=after.updated_at,
            version=before.version + 1,
            refunded_amount=after.refunded_amount,
            refunding_amount=after.refunding_amount,
            **_confirmed(after),
        )
    )
    if result.rowcount != 1:
        raise ConcurrentUpdate(before.payment_id)
    _save_orders(conn, before.orders, after.orders)
    try:
        refund_repository.save_refunds(conn, before.refunds, after.refunds)
    except refund_repository.ConcurrentRefundUpdate as exc:
        raise ConcurrentUpdate(before.payment_id) from exc
    if before.status != after.status:
        conn.execute(
            insert(payment_transitions).values(
                payment_id=before.payment_id,
                from_status=before.status.value,
                to_status=after.status.value,
                cause=cause,
                at=after.updated_at,
            )
        )


def due_for_expiry(conn: Connection, now: datetime, limit: int) -> Sequence[str]:
    rows = conn.execute(
        select(payments.c.payment_id)
        .where(
            payments.c.status.in_([PaymentStatus.CREATED.value, PaymentStatus.PAYING.value]),
            payments.c.expire_at <= now,
        )
        .order_by(payments.c.expire_at)
        .limit(limit)
    ).all()
    return [r.payment_id for r in rows]


def paying_since(conn: Connection, before: datetime, limit: int) -> Sequence[str]:
    """Payments with a channel order (PAYING, or CREATED with the channel written down before
    a crash) last touched before ``before``: candidates for 补单 (active query)."""
    with_order = (
        select(channel_orders.c.order_id)
        .where(channel_orders.c.payment_id == payments.c.payment_id)
        .exists()
    )
    rows = conn.execute(
        select(payments.c.payment_id)
        .where(
            payments.c.status.in_([PaymentStatus.CREATED.value, PaymentStatus.PAYING.value]),
            with_order,
            payments.c.updated_at <= before,
        )
        .order_by(payments.c.updated_at)
        .limit(limit)
    ).all()
    return [r.payment_id for r in rows]


def record_callback(
    conn: Connection,
    channel: str,
    notify_id: str,
    payment_id: str,
    trade: Trade,
    decision: ChannelDecision,
) -> bool:
    """Remember what the channel said about a payment and what became of it; False if this
    notify id was already handled for this payment (a redelivery). The same id for another
    payment is another callback."""
    key = (
        channel_callbacks.c.channel == channel,
        channel_callbacks.c.notify_id == notify_id,
        channel_callbacks.c.payment_id == payment_id,
    )
    if conn.execute(select(channel_callbacks.c.outcome).where(*key)).first() is not None:
        return False
    said = trade.state.value if trade.state is not None else (trade.raw_state or "MISSING")
    paid = trade.amount
    conn.execute(
        insert(channel_callbacks).values(
            channel=channel,
            notify_id=notify_id,
            payment_id=payment_id,
            trade_state=said[:16],
            outcome=decision.outcome.value,
            amount=paid.minor if paid is not None else None,
            currency=paid.currency if paid is not None else None,
            detail=decision.problem[:256] or None,
            received_at=utcnow(),
        )
    )
    return True
