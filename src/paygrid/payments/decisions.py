"""The payment core's decision on the channel's word (a callback or a 补单 answer): an outcome
(enum) and the events to emit, applied only when every field the change depends on is present
and equal to what we hold. No framework or database imports."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from paygrid.channels.ports import ChannelAccount, Trade, TradeState
from paygrid.payments.events import PaymentClosed, PaymentEvent, PaymentFailed, PaymentSucceeded
from paygrid.payments.orders import ORDER_TRANSITIONS, OrderStatus
from paygrid.payments.status import TRANSITIONS, PaymentStatus

if TYPE_CHECKING:
    from paygrid.payments.domain import Payment

S = PaymentStatus
EVENT_OF: Mapping[PaymentStatus, type[PaymentEvent]] = {
    S.SUCCESS: PaymentSucceeded,
    S.CLOSED: PaymentClosed,
    S.FAILED: PaymentFailed,
}
ORDER_STATUS_OF: Mapping[PaymentStatus, OrderStatus] = {
    S.SUCCESS: OrderStatus.PAID,
    S.CLOSED: OrderStatus.CLOSED,
    S.FAILED: OrderStatus.FAILED,
}


def decide(
    payment: Payment, trade: Trade, account: ChannelAccount, channel: str, now: datetime
) -> ChannelDecision:
    """The channel's word (a callback or a 补单 answer) on this payment: applied only when
    every field the change depends on is present and equal to what we hold."""
    target = TARGET_OF.get(trade.state) if trade.state is not None else None
    refused = _refusal(payment, trade, account, channel, target)
    if refused is not None:
        return ChannelDecision(refused[0], payment, problem=refused[1])
    if target is None or target == payment.status:
        return ChannelDecision(ChannelOutcome.NO_CHANGE, payment)
    if payment.status in UNPAID_FINAL and target in UNPAID_FINAL:
        return ChannelDecision(ChannelOutcome.STALE, payment)  # both final, no money moved
    if target not in TRANSITIONS[payment.status]:
        problem = f"the channel says {target.value} while we hold {payment.status.value}"
        return ChannelDecision(ChannelOutcome.ILLEGAL_TRANSITION, payment, problem=problem)
    order = payment.order_on(channel)
    if order is None:
        problem = f"{channel} reports on {payment.payment_id}, which has no order there"
        return ChannelDecision(ChannelOutcome.MERCHANT_MISMATCH, payment, problem=problem)
    moved_to = ORDER_STATUS_OF[target]
    # An order we closed at the channel before a crash left its payment open: the channel's
    # CLOSED confirms what we hold of the order, and the payment follows.
    if moved_to != order.status and moved_to not in ORDER_TRANSITIONS[order.status]:
        problem = f"the channel says {target.value} for its order, which we hold {order.status}"
        return ChannelDecision(ChannelOutcome.ILLEGAL_TRANSITION, payment, problem=problem)
    after = replace(payment, status=target, updated_at=now)
    changes: dict[str, object] = {}
    if target == S.SUCCESS:
        after = replace(after, paid_at=trade.paid_at or now, confirmed_amount=trade.amount)
        changes["channel_trade_no"] = trade.channel_trade_no
    elif target == S.CLOSED:
        after = replace(after, closed_at=now)
    after = after.with_order(order.moved(ORDER_STATUS_OF[target], now, **changes), now)
    return ChannelDecision(APPLIED[target], after, (EVENT_OF[target],))


class ChannelOutcome(enum.StrEnum):
    """What became of one report of the channel; recorded per callback in channel_callbacks."""

    APPLY_SUCCESS = "APPLY_SUCCESS"
    APPLY_CLOSED = "APPLY_CLOSED"
    APPLY_FAILED = "APPLY_FAILED"
    NO_CHANGE = "NO_CHANGE"  # what we hold already, or "not paid yet"
    DUPLICATE_CALLBACK = "DUPLICATE_CALLBACK"  # this notify id was handled for this payment
    STALE = "STALE"  # CLOSED vs FAILED: both final, no money moved
    MISSING_FIELD = "MISSING_FIELD"  # a field the change depends on is absent or ill-typed
    MERCHANT_MISMATCH = "MERCHANT_MISMATCH"  # another channel merchant's, app's or order's trade
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"  # paid total or currency differs from the order
    PROTOCOL_MISMATCH = "PROTOCOL_MISMATCH"  # authentic, but breaks the channel's protocol
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"  # e.g. SUCCESS for a payment we closed


_O = ChannelOutcome
# Refused and surfaced: logged as errors, listed by `paygrid check` as CALLBACK_ANOMALY.
ANOMALIES = frozenset(
    {
        _O.MISSING_FIELD,
        _O.MERCHANT_MISMATCH,
        _O.AMOUNT_MISMATCH,
        _O.PROTOCOL_MISMATCH,
        _O.ILLEGAL_TRANSITION,
    }
)
TARGET_OF: Mapping[TradeState, PaymentStatus] = {
    TradeState.SUCCESS: S.SUCCESS,
    TradeState.CLOSED: S.CLOSED,
    TradeState.FAILED: S.FAILED,
}
UNPAID_FINAL = frozenset({S.CLOSED, S.FAILED})
APPLIED: Mapping[PaymentStatus, ChannelOutcome] = {
    S.SUCCESS: _O.APPLY_SUCCESS,
    S.CLOSED: _O.APPLY_CLOSED,
    S.FAILED: _O.APPLY_FAILED,
}
CHANGES = frozenset(APPLIED.values())


@dataclass(frozen=True, slots=True)
class ChannelDecision:
    """The payment after the channel's word (the same object when nothing changes), the outcome,
    the events to emit with the change and, for a refusal, what was wrong."""

    outcome: ChannelOutcome
    payment: Payment
    events: tuple[type[PaymentEvent], ...] = ()
    problem: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome in CHANGES


def _refusal(
    payment: Payment,
    trade: Trade,
    account: ChannelAccount,
    channel: str,
    target: PaymentStatus | None,
) -> tuple[ChannelOutcome, str] | None:
    """Why the trade cannot be taken as the truth about ``payment``, or None. A report that
    would change nothing (not paid yet, not found) needs no more than its state."""
    if trade.defect is not None:
        return _O.PROTOCOL_MISMATCH, trade.defect
    if trade.state is None:
        return _O.MISSING_FIELD, f"missing or ill-typed: trade state ({trade.raw_state!r})"
    if target is None:
        return None
    missing = [
        name
        for name, absent in (
            ("payment_ref", trade.payment_ref is None),
            ("merchant_id", trade.merchant_id is None),
            ("app_id", account.app_id is not None and trade.app_id is None),
            ("amount", target == S.SUCCESS and trade.amount is None),
        )
        if absent
    ]
    if missing:
        return _O.MISSING_FIELD, "missing or ill-typed: " + ", ".join(missing)
    app_id = account.app_id or trade.app_id
    order = payment.order_on(channel)
    ref = order.channel_ref if order is not None else payment.payment_id
    if (trade.payment_ref, trade.merchant_id, trade.app_id) != (
        ref,
        account.merchant_id,
        app_id,
    ):
        return _O.MERCHANT_MISMATCH, (
            f"trade {trade.payment_ref} of {trade.merchant_id}/{trade.app_id} is not ours "
            f"({ref} of {account.merchant_id}/{app_id})"
        )
    if target == S.SUCCESS:
        paid = trade.amount
        if paid is None or paid.minor != payment.amount or paid.currency != payment.currency:
            said = f"{paid.minor} {paid.currency}" if paid is not None else "no amount"
            held = f"{payment.amount} {payment.currency}"
            return _O.AMOUNT_MISMATCH, f"the channel holds {said}, the order {held}"
    return None
