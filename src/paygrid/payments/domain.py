"""Payment (支付单) domain: the state machine as an explicit table, and the order's own rules.

No framework or database imports: the service layer loads, applies and stores.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from paygrid.channels.ports import ChannelAccount, Trade, TradeState
from paygrid.kernel.money import Money


class PaymentStatus(enum.StrEnum):
    CREATED = "CREATED"  # 待支付: order exists, no channel order yet
    PAYING = "PAYING"  # 支付中: a channel order was placed, waiting for the payer
    SUCCESS = "SUCCESS"  # 支付成功
    FAILED = "FAILED"  # 支付失败
    CLOSED = "CLOSED"  # 已关闭: closed by the merchant or expired, at the channel too


S = PaymentStatus
# The only allowed transitions. CREATED -> SUCCESS is allowed because the channel is the truth:
# a channel order may exist whose PAYING update never committed (crash between the two).
TRANSITIONS: Mapping[PaymentStatus, frozenset[PaymentStatus]] = {
    S.CREATED: frozenset({S.PAYING, S.SUCCESS, S.FAILED, S.CLOSED}),
    S.PAYING: frozenset({S.SUCCESS, S.FAILED, S.CLOSED}),
    S.SUCCESS: frozenset(),
    S.FAILED: frozenset(),
    S.CLOSED: frozenset(),
}
FINAL = frozenset({S.SUCCESS, S.FAILED, S.CLOSED})
EVENT_OF = {S.SUCCESS: "payment.succeeded", S.CLOSED: "payment.closed", S.FAILED: "payment.failed"}


class IllegalTransition(Exception):
    """A transition the table does not allow; logged and surfaced, never applied."""

    def __init__(self, payment_id: str, current: PaymentStatus, target: PaymentStatus) -> None:
        super().__init__(f"payment {payment_id}: {current} -> {target} is not allowed")
        self.payment_id = payment_id
        self.current = current
        self.target = target


def check_transition(payment_id: str, current: PaymentStatus, target: PaymentStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(payment_id, current, target)


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    name: str
    quantity: int
    unit_amount: int


@dataclass(frozen=True, slots=True)
class Discount:
    name: str
    amount: int


class OrderInvalid(ValueError):
    """The order breaks one of its own rules; ``field`` names what is wrong."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def check_items(total: int, items: Sequence[Item], discounts: Sequence[Discount]) -> None:
    """When items are given, sum(quantity × unit_amount) − sum(discounts) must equal total."""
    if not items:
        if discounts:
            raise OrderInvalid("INVALID_DISCOUNTS", "discounts", "discounts need items")
        return
    gross = sum(i.quantity * i.unit_amount for i in items)
    off = sum(d.amount for d in discounts)
    if gross - off != total:
        raise OrderInvalid(
            "ITEMS_TOTAL_MISMATCH",
            "items",
            f"items sum to {gross} minus discounts {off} = {gross - off}, "
            f"but amount.total is {total}",
        )


def request_fingerprint(body: Mapping[str, Any]) -> str:
    """A stable hash of a request's meaning, to tell a repeat from a different request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    mchid: str
    out_trade_no: str
    amount: int
    currency: str
    description: str
    notify_url: str
    return_url: str | None
    channel: str | None
    method: str
    status: PaymentStatus
    expire_at: datetime
    attach: str | None
    items: tuple[Item, ...]
    discounts: tuple[Discount, ...]
    request_hash: str
    code_url: str | None
    channel_trade_no: str | None
    refunded_amount: int
    paid_at: datetime | None
    closed_at: datetime | None
    cashier_token: str
    created_at: datetime
    updated_at: datetime
    version: int
    confirmed_amount: Money | None = None  # what the channel confirmed when SUCCESS was applied

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expire_at

    def apply_channel_trade(
        self, trade: Trade, account: ChannelAccount, channel: str, now: datetime
    ) -> ChannelDecision:
        """The channel's word (a callback or a 补单 answer) on this payment: applied only when
        every field the change depends on is present and equal to what we hold."""
        target = TARGET_OF.get(trade.state) if trade.state is not None else None
        refused = _refusal(self, trade, account, target)
        if refused is not None:
            return ChannelDecision(refused[0], self, problem=refused[1])
        if target is None or target == self.status:
            return ChannelDecision(ChannelOutcome.NO_CHANGE, self)
        if self.status in UNPAID_FINAL and target in UNPAID_FINAL:
            return ChannelDecision(ChannelOutcome.STALE, self)  # both final, no money moved
        if target not in TRANSITIONS[self.status]:
            problem = f"the channel says {target.value} while we hold {self.status.value}"
            return ChannelDecision(ChannelOutcome.ILLEGAL_TRANSITION, self, problem=problem)
        after = replace(self, status=target, updated_at=now)
        if target == S.SUCCESS:
            after = replace(
                after,
                paid_at=trade.paid_at or now,
                channel_trade_no=trade.channel_trade_no,
                channel=self.channel or channel,
                confirmed_amount=trade.amount,
            )
        elif target == S.CLOSED:
            after = replace(after, closed_at=now)
        return ChannelDecision(ChannelOutcome(f"APPLY_{target.value}"), after, (EVENT_OF[target],))


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


@dataclass(frozen=True, slots=True)
class ChannelDecision:
    """The payment after the channel's word (the same object when nothing changes), the outcome,
    the events to emit with the change and, for a refusal, what was wrong."""

    outcome: ChannelOutcome
    payment: Payment
    events: tuple[str, ...] = ()
    problem: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome.startswith("APPLY_")


def _refusal(
    payment: Payment, trade: Trade, account: ChannelAccount, target: PaymentStatus | None
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
    if (trade.payment_ref, trade.merchant_id, trade.app_id) != (
        payment.payment_id,
        account.merchant_id,
        app_id,
    ):
        return _O.MERCHANT_MISMATCH, (
            f"trade {trade.payment_ref} of {trade.merchant_id}/{trade.app_id} is not ours "
            f"({payment.payment_id} of {account.merchant_id}/{app_id})"
        )
    if target == S.SUCCESS:
        paid = trade.amount
        if paid is None or paid.minor != payment.amount or paid.currency != payment.currency:
            said = f"{paid.minor} {paid.currency}" if paid is not None else "no amount"
            order = f"{payment.amount} {payment.currency}"
            return _O.AMOUNT_MISMATCH, f"the channel holds {said}, the order {order}"
    return None
