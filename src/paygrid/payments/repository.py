"""Payment persistence. Updates carry the version they read (optimistic lock) and are
recorded with their transition, so no status change goes unexplained.

The money path's statements are built once, here, and executed with parameters (SQLAlchemy
then reuses their compiled form): a payment with its channel orders loads in one statement."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

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


def _order(row: Row[Any], prefix: str = "") -> ChannelOrder:
    m = row._mapping
    action_json = m[prefix + "payer_action"]
    action = PayerAction.from_json(json.loads(action_json)) if action_json else None
    return ChannelOrder(
        order_id=m[prefix + "order_id"],
        payment_id=m[prefix + "payment_id"],
        channel=m[prefix + "channel"],
        method=m[prefix + "method"],
        channel_ref=m[prefix + "channel_ref"],
        status=OrderStatus(m[prefix + "status"]),
        payer_action=action,
        channel_trade_no=m[prefix + "channel_trade_no"],
        created_at=m[prefix + "created_at"],
        updated_at=m[prefix + "updated_at"],
        route=m[prefix + "route"],
    )


def _order_values(o: ChannelOrder) -> dict[str, Any]:
    action = o.payer_action
    return {
        "status": o.status.value,
        "payer_action": json.dumps(action.to_json(), ensure_ascii=False) if action else None,
        "channel_trade_no": o.channel_trade_no,
        "updated_at": o.updated_at,
    }


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
        payer_bank=row.payer_bank,
    )


_INSERT_PAYMENT = insert(payments)
_INSERT_ORDER = insert(channel_orders)
_UPDATE_ORDER = (
    update(channel_orders)
    .where(channel_orders.c.order_id == bindparam("b_order_id"))
    .values(
        status=bindparam("status"),
        payer_action=bindparam("payer_action"),
        channel_trade_no=bindparam("channel_trade_no"),
        updated_at=bindparam("updated_at"),
    )
)
_INSERT_TRANSITION = insert(payment_transitions)
_SAVE_PAYMENT = (
    update(payments)
    .where(
        payments.c.payment_id == bindparam("b_payment_id"),
        payments.c.version == bindparam("b_version"),
    )
    .values(
        {
            c: bindparam(c)
            for c in (
                "status",
                "paid_at",
                "closed_at",
                "updated_at",
                "version",
                "refunded_amount",
                "refunding_amount",
                "confirmed_amount",
                "confirmed_currency",
            )
        }
    )
)


def add(conn: Connection, p: Payment) -> None:
    conn.execute(
        _INSERT_PAYMENT,
        dict(
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
            payer_bank=p.payer_bank,
            **_confirmed(p),
        ),
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
                _INSERT_ORDER,
                {
                    "order_id": order.order_id,
                    "payment_id": order.payment_id,
                    "channel": order.channel,
                    "method": order.method,
                    "channel_ref": order.channel_ref,
                    "created_at": order.created_at,
                    "route": order.route,
                    **_order_values(order),
                },
            )
        elif old[order.order_id] != order:
            conn.execute(_UPDATE_ORDER, {"b_order_id": order.order_id, **_order_values(order)})


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


_ORDER_COLUMNS = [c.label("o_" + c.name) for c in channel_orders.c]
_WITH_ORDERS = (
    select(payments, *_ORDER_COLUMNS)
    .select_from(payments.outerjoin(channel_orders))
    .order_by(channel_orders.c.created_at, channel_orders.c.order_id)
)
_BY_ID = _WITH_ORDERS.where(payments.c.payment_id == bindparam("payment_id"))
_BY_OUT_TRADE_NO = _WITH_ORDERS.where(
    payments.c.mchid == bindparam("mchid"), payments.c.out_trade_no == bindparam("out_trade_no")
)
_BY_ORDER = _WITH_ORDERS.where(
    payments.c.payment_id
    == select(channel_orders.c.payment_id)
    .where(
        channel_orders.c.channel == bindparam("channel"),
        channel_orders.c.channel_ref == bindparam("channel_ref"),
    )
    .scalar_subquery()
)


def get(conn: Connection, payment_id: str, *, for_update: bool = False) -> Payment | None:
    return _load(conn, _BY_ID, {"payment_id": payment_id}, for_update)


def get_by_order(
    conn: Connection, channel: str, channel_ref: str, *, for_update: bool = False
) -> Payment | None:
    """The payment one of whose orders at ``channel`` is ``channel_ref`` (a callback names it)."""
    return _load(conn, _BY_ORDER, {"channel": channel, "channel_ref": channel_ref}, for_update)


def get_by_out_trade_no(conn: Connection, mchid: str, out_trade_no: str) -> Payment | None:
    return _load(conn, _BY_OUT_TRADE_NO, {"mchid": mchid, "out_trade_no": out_trade_no}, False)


def _load(
    conn: Connection, stmt: Select[Any], params: dict[str, Any], for_update: bool
) -> Payment | None:
    """The payment with its channel orders (one statement) and, once paid, its refunds."""
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=payments)
    rows = conn.execute(stmt, params).all()
    if not rows:
        return None
    row = rows[0]
    orders = tuple(_order(r, "o_") for r in rows if r.o_order_id is not None)
    paid = row.status == PaymentStatus.SUCCESS.value  # only a paid payment has refunds
    refunds = refund_repository.refunds_of(conn, row.payment_id) if paid else ()
    return _payment(row, orders, refunds)


def save_change(conn: Connection, before: Payment, after: Payment, cause: str) -> None:
    """Store ``after`` if the row is still at ``before.version``; record the transition."""
    result = conn.execute(
        _SAVE_PAYMENT,
        {
            "b_payment_id": before.payment_id,
            "b_version": before.version,
            "status": after.status.value,
            "paid_at": after.paid_at,
            "closed_at": after.closed_at,
            "updated_at": after.updated_at,
            "version": before.version + 1,
            "refunded_amount": after.refunded_amount,
            "refunding_amount": after.refunding_amount,
            **_confirmed(after),
        },
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
            _INSERT_TRANSITION,
            {
                "payment_id": before.payment_id,
                "from_status": before.status.value,
                "to_status": after.status.value,
                "cause": cause,
                "at": after.updated_at,
            },
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


@functools.cache
def _record_callback(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: the insert is the dedup; built once."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(channel_callbacks).on_conflict_do_nothing().returning(channel_callbacks.c.notify_id)
    )


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
    said = trade.state.value if trade.state is not None else (trade.raw_state or "MISSING")
    paid = trade.amount
    first = conn.execute(
        _record_callback(conn.dialect.name),
        {
            "channel": channel,
            "notify_id": notify_id,
            "payment_id": payment_id,
            "trade_state": said[:16],
            "outcome": decision.outcome.value,
            "amount": paid.minor if paid is not None else None,
            "currency": paid.currency if paid is not None else None,
            "detail": decision.problem[:256] or None,
            "received_at": utcnow(),
        },
    ).first()
    return first is not None
