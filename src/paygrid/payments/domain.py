"""Payment (支付单) domain: the state machine as an explicit table, and the order's own rules.

No framework or database imports: the service layer loads, applies and stores.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expire_at
