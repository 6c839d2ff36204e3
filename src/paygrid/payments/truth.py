"""The channel's truth about a payment: its callbacks (回调) and its answers to 补单 queries,
applied through the payment's own decision (payments/decisions.py). Refund callbacks go to the
refund use cases (payments/refund_cases.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from paygrid.channels.ports import (
    CallbackRefusal,
    CallbackRejected,
    CallbackReply,
    RefundCallback,
    Trade,
)
from paygrid.kernel.clock import utcnow
from paygrid.payments import refund_cases, repository
from paygrid.payments.core import Core
from paygrid.payments.domain import ANOMALIES, ChannelOutcome, Payment
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.uow import Tx

log = logging.getLogger(__name__)


def handle_callback(
    core: Core, channel: str, headers: Mapping[str, str], body: bytes
) -> CallbackReply:
    """A channel callback: verify, deduplicate by (notify id, payment), apply; answer as the
    channel expects. A repeat, late or out-of-order callback changes nothing."""
    adapter = core.channels.adapter(channel)
    try:
        callback = adapter.parse_callback(headers, body)
    except CallbackRejected as exc:
        # A verified callback we cannot read is a fault on one side: an error, not noise.
        forged = exc.refusal == CallbackRefusal.BAD_SIGNATURE
        level = logging.WARNING if forged else logging.ERROR
        log.log(level, "refused %s callback (%s): %s", channel, exc.refusal.value, exc)
        return adapter.callback_nack(str(exc), exc.refusal)
    if isinstance(callback, RefundCallback):
        return refund_cases.handle_refund_callback(core, channel, callback)
    trade = callback.trade
    ref = trade.payment_ref
    if ref is None:
        log.error("%s callback %s names no payment", channel, callback.notify_id)
        return adapter.callback_nack("no out_trade_no", CallbackRefusal.MALFORMED)
    try:
        outcome = core.uow.change_by_order(
            channel,
            ref,
            lambda tx, current: _apply(
                core, tx, current, trade, f"callback:{channel}", callback.notify_id, channel
            ),
        )
    except PaymentRejected as exc:
        unknown = exc.code == "PAYMENT_NOT_FOUND"
        log.error("%s callback %s for %s: %s", channel, callback.notify_id, ref, exc)
        refusal = CallbackRefusal.UNKNOWN_PAYMENT if unknown else CallbackRefusal.RETRY_LATER
        return adapter.callback_nack(exc.message, refusal)
    log.info("%s callback %s for %s: %s", channel, callback.notify_id, ref, outcome)
    return adapter.callback_ack()


def apply_trade(
    core: Core, channel: str, payment_id: str, trade: Trade, cause: str
) -> ChannelOutcome:
    """Apply a 补单 (query) answer about ``payment_id``; refusals are recorded once per
    payment, cause and outcome, so `paygrid check` reports them like callbacks."""
    return core.uow.change(
        payment_id, lambda tx, current: _apply(core, tx, current, trade, cause, None, channel)
    )


def _apply(
    core: Core,
    tx: Tx,
    current: Payment,
    trade: Trade,
    cause: str,
    notify_id: str | None,
    channel: str,
) -> ChannelOutcome:
    account = core.channels.adapter(channel).account
    decision = current.apply_channel_trade(trade, account, channel, utcnow())
    outcome = decision.outcome
    record = repository.record_callback
    if notify_id is not None:
        if not record(tx.conn, channel, notify_id, current.payment_id, trade, decision):
            return ChannelOutcome.DUPLICATE_CALLBACK
    elif outcome in ANOMALIES:  # a 补单 answer: one row per payment, cause and outcome
        record(tx.conn, channel, f"{cause}:{outcome}", current.payment_id, trade, decision)
    if outcome in ANOMALIES:
        log.error(
            "payment %s: %s %s (%s) refused: %s: %s",
            current.payment_id,
            channel,
            cause,
            trade.raw_state,
            outcome,
            decision.problem,
        )
    if decision.changed:
        tx.save(current, decision.payment, cause, decision.events)
    return outcome
