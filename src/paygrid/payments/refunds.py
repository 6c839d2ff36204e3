"""Refund (退款) domain: a refund of a successful payment, keyed to the channel order (attempt)
whose money it gives back, with its state machine as an explicit table; the admission of a new
refund against what remains of its payment; and the decision on the channel's word about it.

The money rule: a refund is written down PROCESSING, with its amount reserved on its payment
(``refunding_amount``), before the channel is called; SUCCESS moves the amount from refunding
to refunded, FAILED releases it. ``amount - refunded - refunding`` is what remains, so no
interleaving of requests refunds more than was paid. No framework or database imports.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from paygrid.channels.ports import ChannelAccount, ChannelCapabilities, RefundState, RefundTrade
from paygrid.payments.events import RefundEvent, RefundFailed, RefundSucceeded

if TYPE_CHECKING:
    from paygrid.payments.domain import Payment

MAX_REFUNDS_PER_PAYMENT = 50  # as channels commonly allow; each one is listed on its payment
MAX_REFUND_ITEMS = 100


class RefundStatus(enum.StrEnum):
    PROCESSING = "PROCESSING"  # 退款中: written down, amount reserved, the channel has (or gets) it
    SUCCESS = "SUCCESS"  # 退款成功: the money went back to the payer
    FAILED = "FAILED"  # 退款失败/关闭: no money moved; the amount is refundable again


_R = RefundStatus
# The only allowed transitions of a refund. A channel's own "held" state (e.g. an abnormal refund:
# the money left the merchant but did not reach the payer) stays PROCESSING, amount reserved.
REFUND_TRANSITIONS: Mapping[RefundStatus, frozenset[RefundStatus]] = {
    _R.PROCESSING: frozenset({_R.SUCCESS, _R.FAILED}),
    _R.SUCCESS: frozenset(),
    _R.FAILED: frozenset(),
}


class IllegalRefundTransition(Exception):
    def __init__(self, refund_id: str, current: RefundStatus, target: RefundStatus) -> None:
        super().__init__(f"refund {refund_id}: {current} -> {target} is not allowed")


@dataclass(frozen=True, slots=True)
class RefundItem:
    """A refunded SKU and quantity, kept for per-SKU reconciliation (no allocation here)."""

    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class RefundDraft:
    """What the merchant asked for, before the payment admits it."""

    refund_id: str
    mchid: str
    out_refund_no: str
    amount: int
    reason: str | None
    notify_url: str | None
    items: tuple[RefundItem, ...]
    request_hash: str


@dataclass(frozen=True, slots=True)
class Refund:
    """``channel_ref`` is our refund number toward the channel (its out_refund_no or
    out_request_no): the refund id, which the channel takes once."""

    refund_id: str
    payment_id: str
    order_id: str  # the channel order (attempt) whose money goes back
    channel: str
    channel_ref: str
    mchid: str
    out_refund_no: str
    amount: int
    currency: str
    reason: str | None
    notify_url: str | None
    items: tuple[RefundItem, ...]
    request_hash: str
    status: RefundStatus
    channel_refund_no: str | None
    channel_state: str | None  # the channel's own word (ABNORMAL, REFUND_SUCCESS, an error code)
    created_at: datetime
    updated_at: datetime
    succeeded_at: datetime | None = None
    failed_at: datetime | None = None
    cause: str | None = None  # what ended it: a callback, the channel's answer, 补单...
    version: int = 1

    @property
    def final(self) -> bool:
        return not REFUND_TRANSITIONS[self.status]

    def moved(self, target: RefundStatus, now: datetime, cause: str) -> Refund:
        """This refund in ``target``; raises IllegalRefundTransition outside the table."""
        if target not in REFUND_TRANSITIONS[self.status]:
            raise IllegalRefundTransition(self.refund_id, self.status, target)
        return replace(
            self,
            status=target,
            updated_at=now,
            cause=cause[:64],
            succeeded_at=now if target == _R.SUCCESS else self.succeeded_at,
            failed_at=now if target == _R.FAILED else self.failed_at,
        )

    def noted(self, trade: RefundTrade) -> Refund:
        """The channel's refund number and own word recorded (no change of status)."""
        return replace(
            self,
            channel_refund_no=trade.channel_refund_no or self.channel_refund_no,
            channel_state=(trade.raw_state or self.channel_state or None),
        )

    def touched(self, now: datetime) -> Refund:
        """Asked about now (补单): the next query waits another interval."""
        return replace(self, updated_at=now)


# --- admission: may this refund be made? ----------------------------------------------------
class Admission(enum.StrEnum):
    """The payment's answer to a refund request; every refusal is the API's error code."""

    ACCEPTED = "ACCEPTED"
    PAYMENT_NOT_REFUNDABLE = "PAYMENT_NOT_REFUNDABLE"  # not SUCCESS
    REFUND_EXCEEDS_REMAINING = "REFUND_EXCEEDS_REMAINING"  # above amount - refunded - refunding
    REFUND_WINDOW_CLOSED = "REFUND_WINDOW_CLOSED"  # past the channel's refund window
    PARTIAL_REFUND_NOT_SUPPORTED = "PARTIAL_REFUND_NOT_SUPPORTED"  # the channel refunds whole
    TOO_MANY_REFUNDS = "TOO_MANY_REFUNDS"  # MAX_REFUNDS_PER_PAYMENT reached
    INVALID_ITEMS = "INVALID_ITEMS"  # a SKU the payment has not, or more than it had


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    outcome: Admission
    payment: Payment  # with the refund and its reservation when ACCEPTED
    refund: Refund | None = None
    problem: str = ""


def admit(
    payment: Payment, draft: RefundDraft, caps: ChannelCapabilities | None, now: datetime
) -> AdmissionDecision:
    """Admit ``draft`` against ``payment``: the refund PROCESSING and its amount reserved, or
    the reason it is refused. ``caps``: the capabilities of the channel that was paid."""
    order = payment.paid_order
    refused = _admission_refusal(payment, draft, caps, now)
    if refused is not None:
        return AdmissionDecision(refused[0], payment, problem=refused[1])
    assert order is not None
    refund = Refund(
        refund_id=draft.refund_id,
        payment_id=payment.payment_id,
        order_id=order.order_id,
        channel=order.channel,
        channel_ref=draft.refund_id,
        mchid=draft.mchid,
        out_refund_no=draft.out_refund_no,
        amount=draft.amount,
        currency=payment.currency,
        reason=draft.reason,
        notify_url=draft.notify_url,
        items=draft.items,
        request_hash=draft.request_hash,
        status=_R.PROCESSING,
        channel_refund_no=None,
        channel_state=None,
        created_at=now,
        updated_at=now,
    )
    return AdmissionDecision(Admission.ACCEPTED, payment.refund_reserved(refund, now), refund)


def _admission_refusal(
    payment: Payment, draft: RefundDraft, caps: ChannelCapabilities | None, now: datetime
) -> tuple[Admission, str] | None:
    assert draft.amount > 0 and draft.mchid == payment.mchid
    A = Admission
    if payment.paid_order is None or caps is None or payment.paid_at is None:
        return A.PAYMENT_NOT_REFUNDABLE, f"the payment is {payment.status.value}, not SUCCESS"
    if now - payment.paid_at > caps.refund_window:
        return A.REFUND_WINDOW_CLOSED, (
            f"{payment.paid_order.channel} takes refunds for {caps.refund_window.days} days "
            "after payment"
        )
    if not caps.partial_refunds and draft.amount != payment.amount:
        return A.PARTIAL_REFUND_NOT_SUPPORTED, (
            f"{payment.paid_order.channel} refunds only the whole amount ({payment.amount})"
        )
    if len(payment.refunds) >= MAX_REFUNDS_PER_PAYMENT:
        return A.TOO_MANY_REFUNDS, f"a payment takes at most {MAX_REFUNDS_PER_PAYMENT} refunds"
    remaining = payment.refundable_amount
    if draft.amount > remaining:
        return A.REFUND_EXCEEDS_REMAINING, (
            f"{draft.amount} is above what remains refundable: {remaining} of {payment.amount} "
            f"(refunded {payment.refunded_amount}, in progress {payment.refunding_amount})"
        )
    problem = _items_problem(payment, draft.items)
    return (A.INVALID_ITEMS, problem) if problem else None


def _items_problem(payment: Payment, items: tuple[RefundItem, ...]) -> str:
    bought = {i.sku: i.quantity for i in payment.items}
    seen: set[str] = set()
    for item in items:
        if item.sku not in bought:
            return f"the payment has no item {item.sku!r}"
        if item.sku in seen:
            return f"item {item.sku!r} is listed twice"
        if not 0 < item.quantity <= bought[item.sku]:
            return f"item {item.sku!r}: quantity {item.quantity} of {bought[item.sku]} bought"
        seen.add(item.sku)
    return ""


# --- the channel's word on a refund ---------------------------------------------------------
class RefundOutcome(enum.StrEnum):
    """What became of one report of the channel on a refund; recorded per callback."""

    APPLY_SUCCESS = "APPLY_SUCCESS"
    APPLY_FAILED = "APPLY_FAILED"
    NOTED = "NOTED"  # still processing; the channel's refund number or own word recorded
    NO_CHANGE = "NO_CHANGE"  # what we hold already
    STALE = "STALE"  # "processing" about a refund that has ended (reports cross)
    NOT_AT_CHANNEL = "NOT_AT_CHANNEL"  # the channel has no such refund: the call never arrived
    DUPLICATE_CALLBACK = "DUPLICATE_CALLBACK"  # this notify id was handled for this refund
    MISSING_FIELD = "MISSING_FIELD"
    MERCHANT_MISMATCH = "MERCHANT_MISMATCH"  # another merchant's, payment's or refund's report
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"  # the channel refunds another amount or currency
    PROTOCOL_MISMATCH = "PROTOCOL_MISMATCH"
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"  # e.g. SUCCESS for a refund we hold FAILED


_O = RefundOutcome
REFUND_ANOMALIES = frozenset(
    {
        _O.MISSING_FIELD,
        _O.MERCHANT_MISMATCH,
        _O.AMOUNT_MISMATCH,
        _O.PROTOCOL_MISMATCH,
        _O.ILLEGAL_TRANSITION,
    }
)
REFUND_CHANGES = frozenset({_O.APPLY_SUCCESS, _O.APPLY_FAILED})
TARGET_OF: Mapping[RefundState, RefundStatus] = {
    RefundState.SUCCESS: _R.SUCCESS,
    RefundState.FAILED: _R.FAILED,
}
EVENT_OF: Mapping[RefundStatus, type[RefundEvent]] = {
    _R.SUCCESS: RefundSucceeded,
    _R.FAILED: RefundFailed,
}


@dataclass(frozen=True, slots=True)
class RefundDecision:
    """The payment after the channel's word on one of its refunds (the same object when nothing
    changes), the outcome, the refund events to emit and, for a refusal, what was wrong."""

    outcome: RefundOutcome
    payment: Payment
    refund_id: str
    events: tuple[type[RefundEvent], ...] = ()
    problem: str = ""


def decide_refund(
    payment: Payment, refund: Refund, trade: RefundTrade, account: ChannelAccount, now: datetime
) -> RefundDecision:
    """The channel's word (answer, callback or 补单 query) on ``refund`` of ``payment``: applied
    only when every field the change depends on is present and equal to what we hold."""
    refused = _refusal(payment, refund, trade, account)
    if refused is not None:
        return RefundDecision(refused[0], payment, refund.refund_id, problem=refused[1])
    state = trade.state
    assert state is not None
    if state == RefundState.NOT_FOUND:
        return _not_at_channel(payment, refund)
    if state == RefundState.PROCESSING:
        return _still_processing(payment, refund, trade, now)
    target = TARGET_OF[state]
    if target == refund.status:
        return RefundDecision(_O.NO_CHANGE, payment, refund.refund_id)
    if target not in REFUND_TRANSITIONS[refund.status]:
        problem = f"the channel says {target.value} while we hold {refund.status.value}"
        return RefundDecision(_O.ILLEGAL_TRANSITION, payment, refund.refund_id, problem=problem)
    cause = "channel_" + (trade.raw_state or target.value).lower()
    ended = refund.noted(trade).moved(target, now, cause)
    if target == _R.SUCCESS and trade.succeeded_at is not None:
        ended = replace(ended, succeeded_at=trade.succeeded_at)
    outcome = _O.APPLY_SUCCESS if target == _R.SUCCESS else _O.APPLY_FAILED
    after = payment.refund_settled(ended, now)
    return RefundDecision(outcome, after, refund.refund_id, (EVENT_OF[target],))


def _not_at_channel(payment: Payment, refund: Refund) -> RefundDecision:
    if refund.status == _R.PROCESSING:
        return RefundDecision(_O.NOT_AT_CHANNEL, payment, refund.refund_id)
    if refund.status == _R.FAILED:
        return RefundDecision(_O.NO_CHANGE, payment, refund.refund_id)
    problem = "the channel has no refund that we hold SUCCESS"
    return RefundDecision(_O.ILLEGAL_TRANSITION, payment, refund.refund_id, problem=problem)


def _still_processing(
    payment: Payment, refund: Refund, trade: RefundTrade, now: datetime
) -> RefundDecision:
    if refund.status != _R.PROCESSING:
        return RefundDecision(_O.STALE, payment, refund.refund_id)  # reports crossed
    noted = refund.noted(trade)
    if noted == refund:
        return RefundDecision(_O.NO_CHANGE, payment, refund.refund_id)
    after = payment.with_refund(replace(noted, updated_at=now), now)
    return RefundDecision(_O.NOTED, after, refund.refund_id)


def refused_by_channel(
    payment: Payment, refund: Refund, code: str, now: datetime
) -> RefundDecision:
    """The channel refused the refund call for good (no refund exists there): FAILED with its
    reservation released; nothing when the refund has already ended (its word came first)."""
    if refund.status != _R.PROCESSING:
        return RefundDecision(_O.STALE, payment, refund.refund_id)
    ended = replace(refund.moved(_R.FAILED, now, "channel_refused"), channel_state=code[:32])
    after = payment.refund_settled(ended, now)
    return RefundDecision(_O.APPLY_FAILED, after, refund.refund_id, (RefundFailed,))


def _refusal(
    payment: Payment, refund: Refund, trade: RefundTrade, account: ChannelAccount
) -> tuple[RefundOutcome, str] | None:
    """Why the report cannot be taken as the truth about ``refund``, or None."""
    if trade.defect is not None:
        return _O.PROTOCOL_MISMATCH, trade.defect
    if trade.state is None:
        return _O.MISSING_FIELD, f"missing or ill-typed: refund state ({trade.raw_state!r})"
    if trade.refund_ref is None:
        return _O.MISSING_FIELD, "missing or ill-typed: refund_ref"
    order = next((o for o in payment.orders if o.order_id == refund.order_id), None)
    payment_ref = order.channel_ref if order is not None else None
    if (
        trade.refund_ref != refund.channel_ref
        or (trade.payment_ref is not None and trade.payment_ref != payment_ref)
        or (trade.merchant_id is not None and trade.merchant_id != account.merchant_id)
    ):
        return _O.MERCHANT_MISMATCH, (
            f"refund {trade.refund_ref} of {trade.payment_ref}/{trade.merchant_id} is not ours "
            f"({refund.channel_ref} of {payment_ref}/{account.merchant_id})"
        )
    if trade.state == RefundState.NOT_FOUND:
        return None
    said = trade.amount
    if said is None and trade.state == RefundState.SUCCESS:
        return _O.MISSING_FIELD, "missing or ill-typed: amount"
    if said is not None and (said.minor, said.currency) != (refund.amount, refund.currency):
        return _O.AMOUNT_MISMATCH, (
            f"the channel refunds {said.minor} {said.currency}, the refund is "
            f"{refund.amount} {refund.currency}"
        )
    return None
