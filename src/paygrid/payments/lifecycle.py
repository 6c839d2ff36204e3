"""Ending payments: 关单 by the merchant, expiry, and 补单 (asking the channel about payments
whose callback has not come)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from paygrid.channels.ports import ChannelError
from paygrid.kernel.clock import utcnow
from paygrid.payments import checkout, repository, truth
from paygrid.payments.core import Core
from paygrid.payments.domain import CHANGES, Payment, PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.uow import Tx

log = logging.getLogger(__name__)
S = PaymentStatus
EXPIRY_BATCH = 100
RECOVERY_BATCH = 100
PaymentGetter = Callable[[str], Payment]


def close(core: Core, payment: Payment, cause: str) -> Payment:
    if payment.status == S.CLOSED:
        return payment
    if payment.status == S.SUCCESS:
        raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payment is paid; refund it instead")
    if payment.status == S.FAILED:
        raise PaymentRejected("PAYMENT_FAILED", "the payment failed and is final")
    for order in payment.orders:
        if order.live:
            checkout.close_order(core, payment, order)

    def change(tx: Tx, current: Payment) -> Payment:
        if current.status in (S.CLOSED, S.SUCCESS, S.FAILED):
            return current
        decision = current.close(utcnow())
        return tx.save(current, decision.payment, cause, decision.events)

    closed = core.uow.change(payment.payment_id, change)
    if closed.status == S.SUCCESS:
        raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payment was paid meanwhile")
    return closed


def expire_due(core: Core, get: PaymentGetter, now: datetime | None = None) -> int:
    """Close unpaid payments whose expire_at has passed, at the channel too."""
    with core.uow.read() as conn:  # only reads: never the write lock
        due = repository.due_for_expiry(conn, now or utcnow(), EXPIRY_BATCH)
    closed = 0
    for payment_id in due:
        try:
            close(core, get(payment_id), cause="expired")
            closed += 1
        except PaymentRejected as exc:
            log.info("expiry of %s: %s", payment_id, exc)
    return closed


def recover_pending(
    core: Core, get: PaymentGetter, older_than: timedelta, now: datetime | None = None
) -> int:
    """补单: ask the channel about payments with an order whose callback has not come."""
    cutoff = (now or utcnow()) - older_than
    with core.uow.read() as conn:
        candidates = repository.paying_since(conn, cutoff, RECOVERY_BATCH)
    changed = 0
    for payment_id in candidates:
        order = get(payment_id).order
        if order is None:
            continue
        try:
            trade = core.channels.adapter(order.channel).query(order.channel_ref)
        except ChannelError as exc:
            log.warning("补单 query for %s failed: %s", payment_id, exc)
            continue
        outcome = truth.apply_trade(core, order.channel, payment_id, trade, "recovery_query")
        if outcome in CHANGES:
            changed += 1
        else:
            _touch(core, payment_id)  # queried now: next query after another interval
    return changed


def _touch(core: Core, payment_id: str) -> None:
    def change(tx: Tx, current: Payment) -> None:
        if current.status in (S.CREATED, S.PAYING):
            tx.save(current, current.touched(utcnow()), "recovery_query")

    core.uow.change(payment_id, change)
