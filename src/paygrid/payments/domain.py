"""Payment (支付单) domain: the state machine as an explicit table, and the order's own rules.

No framework or database imports: the service layer loads, applies and stores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from paygrid.channels.ports import (
    ChannelAccount,
    ChannelCapabilities,
    PayerAction,
    PayerActionKind,
    RefundTrade,
    Trade,
)
from paygrid.kernel.money import Money
from paygrid.payments.decisions import (
    ANOMALIES,
    CHANGES,
    EVENT_OF,
    ChannelDecision,
    ChannelOutcome,
    decide,
)
from paygrid.payments.events import PaymentClosed
from paygrid.payments.orders import ChannelOrder, OrderStatus
from paygrid.payments.refunds import (
    AdmissionDecision,
    Refund,
    RefundDecision,
    RefundDraft,
    RefundStatus,
    admit,
    decide_refund,
)
from paygrid.payments.status import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    PaymentStatus,
    check_transition,
)

S = PaymentStatus
__all__ = [  # the payment domain, as its users import it
    "ANOMALIES",
    "CHANGES",
    "EVENT_OF",
    "FINAL",
    "TRANSITIONS",
    "ChannelDecision",
    "ChannelOutcome",
    "Discount",
    "IllegalTransition",
    "Item",
    "OrderInvalid",
    "Payment",
    "PaymentStatus",
    "Refund",
    "RefundDraft",
    "RefundStatus",
    "check_items",
    "check_transition",
    "request_fingerprint",
]


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
    method: str  # as the merchant asked: cashier, or the method of a named channel
    status: PaymentStatus
    expire_at: datetime
    attach: str | None
    items: tuple[Item, ...]
    discounts: tuple[Discount, ...]
    request_hash: str
    refunded_amount: int
    paid_at: datetime | None
    closed_at: datetime | None
    cashier_token: str
    created_at: datetime
    updated_at: datetime
    version: int
    confirmed_amount: Money | None = None  # what the channel confirmed when SUCCESS was applied
    orders: tuple[ChannelOrder, ...] = ()  # its channel orders (attempts), oldest first
    refunding_amount: int = 0  # reserved by its refunds PROCESSING (退款中)
    refunds: tuple[Refund, ...] = ()  # its refunds (退款), oldest first
    payer_bank: str | None = None  # the payer's bank (付款银行, kernel/banks.py), if given

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expire_at

    # --- its channel orders (渠道订单) -----------------------------------------------------
    @property
    def order(self) -> ChannelOrder | None:
        """The current attempt: the newest one (the one that paid, once paid)."""
        return self.orders[-1] if self.orders else None

    @property
    def channel(self) -> str | None:
        return self.order.channel if self.order is not None else None

    @property
    def channel_trade_no(self) -> str | None:
        return self.order.channel_trade_no if self.order is not None else None

    @property
    def payer_action(self) -> PayerAction | None:
        return self.order.payer_action if self.order is not None else None

    @property
    def code_url(self) -> str | None:
        action = self.payer_action
        return action.content if action and action.kind == PayerActionKind.QR_CODE else None

    def order_on(self, channel: str) -> ChannelOrder | None:
        return next((o for o in reversed(self.orders) if o.channel == channel), None)

    def with_order(self, order: ChannelOrder, now: datetime) -> Payment:
        """This payment with ``order`` added or replaced (by order id)."""
        kept = tuple(o for o in self.orders if o.order_id != order.order_id)
        ordered = tuple(sorted((*kept, order), key=lambda o: (o.created_at, o.order_id)))
        return replace(self, orders=ordered, updated_at=now)

    def request_order(self, order: ChannelOrder, now: datetime) -> Payment:
        """Write down a new attempt before the channel is called (its id, channel, method): if
        we crash once the channel took it, expiry and 补单 still know where to look."""
        assert self.status in (S.CREATED, S.PAYING), f"{self.payment_id} is {self.status}"
        live = [o.order_id for o in self.orders if o.live]
        assert not live, f"{self.payment_id} still has live channel orders {live}"
        assert order.status == OrderStatus.REQUESTED and order.payment_id == self.payment_id
        return self.with_order(order, now)

    def order_placed(self, order_id: str, action: PayerAction, now: datetime) -> Payment | None:
        """The channel took attempt ``order_id``: CREATED -> PAYING with its payer action; None
        when a callback, close or expiry won the race (their state stands)."""
        order = next((o for o in self.orders if o.order_id == order_id), None)
        if self.status not in (S.CREATED, S.PAYING) or order is None or not order.live:
            return None
        if self.status == S.CREATED:
            check_transition(self.payment_id, self.status, S.PAYING)
        opened = order.moved(OrderStatus.OPEN, now, payer_action=action)
        return replace(self.with_order(opened, now), status=S.PAYING)

    def touched(self, now: datetime) -> Payment:
        """Asked about now (补单): the next query waits another interval."""
        return replace(self, updated_at=now)

    def order_closed(self, order_id: str, now: datetime) -> Payment:
        """A live attempt closed at the channel (another channel was chosen, or the payment
        ended): it can no longer be paid."""
        order = next(o for o in self.orders if o.order_id == order_id)
        return self.with_order(order.moved(OrderStatus.CLOSED, now), now) if order.live else self

    def close(self, now: datetime) -> ChannelDecision:
        """关单 by the merchant or on expiry, once every live attempt is closed at its channel."""
        if self.status == S.CLOSED:
            return ChannelDecision(ChannelOutcome.NO_CHANGE, self)
        if S.CLOSED not in TRANSITIONS[self.status]:
            problem = f"cannot close a payment that is {self.status.value}"
            return ChannelDecision(ChannelOutcome.ILLEGAL_TRANSITION, self, problem=problem)
        after = replace(self, status=S.CLOSED, closed_at=now, updated_at=now)
        for order in self.orders:
            after = after.order_closed(order.order_id, now)
        return ChannelDecision(ChannelOutcome.APPLY_CLOSED, after, (PaymentClosed,))

    def apply_channel_trade(
        self, trade: Trade, account: ChannelAccount, channel: str, now: datetime
    ) -> ChannelDecision:
        """The channel's word (a callback or a 补单 answer) on this payment: applied only when
        every field the change depends on is present and equal to what we hold."""
        return decide(self, trade, account, channel, now)

    # --- its refunds (退款) ------------------------------------------------------------------
    @property
    def paid_order(self) -> ChannelOrder | None:
        """The attempt that collected the money (refunds go back through it)."""
        if self.status != S.SUCCESS:
            return None
        return next((o for o in self.orders if o.status == OrderStatus.PAID), None)

    @property
    def refundable_amount(self) -> int:
        """What remains: amount - refunded - refunding (reserved by refunds in flight)."""
        return self.amount - self.refunded_amount - self.refunding_amount

    def refund(self, refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.refund_id == refund_id), None)

    def with_refund(self, refund: Refund, now: datetime) -> Payment:
        """This payment with ``refund`` added or replaced (by refund id); amounts unchanged."""
        kept = tuple(r for r in self.refunds if r.refund_id != refund.refund_id)
        ordered = tuple(sorted((*kept, refund), key=lambda r: (r.created_at, r.refund_id)))
        return replace(self, refunds=ordered, updated_at=now)

    def request_refund(
        self, draft: RefundDraft, caps: ChannelCapabilities | None, now: datetime
    ) -> AdmissionDecision:
        """Admit a refund: PROCESSING with its amount reserved, or why not (an enum)."""
        return admit(self, draft, caps, now)

    def refund_reserved(self, refund: Refund, now: datetime) -> Payment:
        assert refund.status == RefundStatus.PROCESSING and self.refund(refund.refund_id) is None
        assert 0 < refund.amount <= self.refundable_amount, (refund.amount, self.refundable_amount)
        reserved = replace(self, refunding_amount=self.refunding_amount + refund.amount)
        return reserved.with_refund(refund, now)

    def refund_settled(self, ended: Refund, now: datetime) -> Payment:
        """A refund PROCESSING ended: SUCCESS moves its amount from refunding to refunded,
        FAILED releases it."""
        held = self.refund(ended.refund_id)
        assert held is not None and held.status == RefundStatus.PROCESSING, held
        assert ended.status in (RefundStatus.SUCCESS, RefundStatus.FAILED)
        assert held.amount == ended.amount <= self.refunding_amount
        refunded = self.refunded_amount + (
            ended.amount if ended.status == RefundStatus.SUCCESS else 0
        )
        after = replace(
            self, refunding_amount=self.refunding_amount - ended.amount, refunded_amount=refunded
        )
        assert 0 <= after.refunded_amount + after.refunding_amount <= after.amount
        return after.with_refund(ended, now)

    def apply_refund_trade(
        self, refund_id: str, trade: RefundTrade, account: ChannelAccount, now: datetime
    ) -> RefundDecision:
        """The channel's word (answer, callback or 补单) on one of this payment's refunds."""
        refund = self.refund(refund_id)
        assert refund is not None, f"{refund_id} is not a refund of {self.payment_id}"
        return decide_refund(self, refund, trade, account, now)
