"""Placing a payment's channel order (下单) so the payer can pay, and closing orders at their
channel (关单). One live order per payment: choosing another channel closes the old one first."""

from __future__ import annotations

import logging
import time

from paygrid.channels.ports import ChannelError, CloseOutcome, OrderRequest, Payer
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.kernel.money import Money
from paygrid.payments import truth
from paygrid.payments.core import Core, channel_refusal
from paygrid.payments.domain import Payment, PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.orders import ChannelOrder, OrderStatus
from paygrid.payments.uow import Tx

log = logging.getLogger(__name__)
S = PaymentStatus


def check_method(core: Core, channel: str, method: str, payer: Payer) -> None:
    """The channel declares the method and the payer carries what the method needs."""
    caps = core.channels.capabilities(channel)
    if method not in caps.methods:
        raise PaymentRejected(
            "METHOD_NOT_SUPPORTED",
            f"{channel} takes {', '.join(sorted(caps.methods))}, not method {method!r}",
        )
    missing = caps.missing_payer_fields(method, payer)
    if missing:
        raise PaymentRejected(
            "PAYER_REQUIRED", f"{channel} {method} payments need payer.{', payer.'.join(missing)}"
        )


def start(
    core: Core,
    payment: Payment,
    channel: str,
    method: str,
    payer: Payer,
    route: str | None = None,
) -> Payment:
    """Place (or reuse) the channel order so the payer can pay; CREATED -> PAYING. ``route``
    is routing's decision (JSON) when routing chose ``channel``."""
    shown = payment.order
    live_here = shown is not None and shown.channel == channel and shown.live
    if payment.status == S.PAYING and live_here and payment.payer_action is not None:
        return payment  # the order the payer was already shown
    ensure_payable(payment)
    core.channels.check_currency(channel, payment.currency)
    check_method(core, channel, method, payer)
    for order in payment.orders:
        if order.live and order.channel != channel:
            close_order(core, payment, order)  # one live channel order at a time
    order, payment = record_intent(core, payment.payment_id, channel, method, route)
    return place(core, payment, order, payer)


def place(core: Core, payment: Payment, order: ChannelOrder, payer: Payer) -> Payment:
    """Place ``order``, written down REQUESTED in ``payment`` as stored, at its channel;
    CREATED -> PAYING with what the payer is shown."""
    channel = order.channel
    adapter = core.channels.adapter(channel)
    request = OrderRequest(
        payment_ref=order.channel_ref,
        amount=Money(payment.amount, payment.currency),
        description=payment.description,
        method=order.method,
        expire_at=payment.expire_at,
        notify_url=core.urls.callback_url(channel),
        payer_ip=payer.client_ip,
        payer_openid=payer.openid,
        payer_bank=payer.bank,
        agreement_no=payer.agreement_no,
        return_url=payment.return_url,
    )
    began = time.monotonic()
    try:
        action = adapter.create_order(request)
    except ChannelError as exc:
        core.health(channel, payer.bank, False, time.monotonic() - began, exc.code)
        log.warning("channel %s refused order for %s: %s", channel, payment.payment_id, exc)
        raise channel_refusal(channel, exc) from exc
    core.health(channel, payer.bank, True, time.monotonic() - began, None)

    def placed(tx: Tx, current: Payment) -> Payment:
        after = current.order_placed(order.order_id, action, utcnow())
        if after is None:
            return current  # a callback or close won the race; its state stands
        return tx.save(current, after, f"order_placed:{channel}")

    after = core.uow.change_from(payment, placed)
    if after.status not in (S.PAYING, S.SUCCESS):
        # Closed or failed while we were at the channel: leave no payable order behind.
        close_order(core, after, order)
    return after


def record_intent(
    core: Core, payment_id: str, channel: str, method: str, route: str | None = None
) -> tuple[ChannelOrder, Payment]:
    """Write the attempt down before calling the channel: if we crash after the channel took
    it, expiry and 补单 still know where to close or query it. Reused while it is live."""

    def change(tx: Tx, current: Payment) -> tuple[ChannelOrder, Payment]:
        existing = current.order_on(channel)
        if existing is not None and existing.live:
            return existing, current  # placed again: the channel order is idempotent on its ref
        ensure_payable(current)
        order = new_order(core, current, channel, method, route)
        now = order.created_at
        saved = tx.save(current, current.request_order(order, now), f"order_requested:{channel}")
        return order, saved

    return core.uow.change(payment_id, change)


def new_order(
    core: Core, payment: Payment, channel: str, method: str, route: str | None = None
) -> ChannelOrder:
    """A new attempt (渠道订单) of ``payment`` at ``channel``, not yet sent: REQUESTED."""
    now = utcnow()
    order_id = new_id("cho", core.cell)
    had_one = payment.order_on(channel) is not None
    return ChannelOrder(
        order_id=order_id,
        payment_id=payment.payment_id,
        channel=channel,
        method=method,
        # The channel never takes an out_trade_no twice: a new attempt on a channel that
        # had a closed one is known there by its own id.
        channel_ref=order_id if had_one else payment.payment_id,
        status=OrderStatus.REQUESTED,
        payer_action=None,
        channel_trade_no=None,
        created_at=now,
        updated_at=now,
        route=route,
    )


def ensure_payable(payment: Payment) -> None:
    if payment.status == S.SUCCESS:
        raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payment is already paid")
    if payment.status in (S.CLOSED, S.FAILED):
        raise PaymentRejected(
            f"PAYMENT_{payment.status.value}", f"the payment is {payment.status.value.lower()}"
        )
    if payment.is_expired(utcnow()):
        raise PaymentRejected("PAYMENT_EXPIRED", "the payment has expired")


def close_order(core: Core, payment: Payment, order: ChannelOrder) -> None:
    """Close one order at its channel and write that down; if the payer paid just now, take
    the channel's word for it and refuse the close."""
    adapter = core.channels.adapter(order.channel)
    try:
        outcome = adapter.close(order.channel_ref)
    except ChannelError as exc:
        raise channel_refusal(order.channel, exc, doing="close") from exc
    if outcome == CloseOutcome.ALREADY_PAID:
        trade = adapter.query(order.channel_ref)
        truth.apply_trade(core, order.channel, payment.payment_id, trade, "close_race")
        raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payer paid before the close")

    def closed(tx: Tx, current: Payment) -> None:
        now_order = next(o for o in current.orders if o.order_id == order.order_id)
        if now_order.live and current.status in (S.CREATED, S.PAYING):
            after = current.order_closed(order.order_id, utcnow())
            tx.save(current, after, f"order_closed:{order.channel}")

    core.uow.change(payment.payment_id, closed)
