"""Payment status (支付单状态) and the one table of its allowed transitions."""

from __future__ import annotations

import enum
from collections.abc import Mapping


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
