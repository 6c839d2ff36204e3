"""Channel order (渠道订单 / 支付尝试): one attempt to collect a payment through one channel.

A payment has its attempts: one today, several once routing fails over to another channel,
never two live at once. Recon, routing and settlement key on the attempt: it carries the
channel, the method, what the payer was asked to do and the channel's own trade number.
No framework or database imports."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from paygrid.channels.ports import PayerAction


class OrderStatus(enum.StrEnum):
    REQUESTED = "REQUESTED"  # written down before the channel call: the channel may have it
    OPEN = "OPEN"  # the channel took it; the payer action is known
    PAID = "PAID"  # the channel confirmed the payment
    CLOSED = "CLOSED"  # closed at the channel (merchant close, expiry, another attempt)
    FAILED = "FAILED"  # the channel says the payer's attempt failed


_S = OrderStatus
# The only allowed transitions of an attempt. REQUESTED -> PAID: the channel is the truth even
# when the OPEN update never committed (a crash after the channel took the order).
ORDER_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    _S.REQUESTED: frozenset({_S.OPEN, _S.PAID, _S.CLOSED, _S.FAILED}),
    _S.OPEN: frozenset({_S.PAID, _S.CLOSED, _S.FAILED}),
    _S.PAID: frozenset(),
    _S.CLOSED: frozenset(),
    _S.FAILED: frozenset(),
}
LIVE = frozenset({_S.REQUESTED, _S.OPEN})  # the payer may still pay through it


class IllegalOrderTransition(Exception):
    def __init__(self, order_id: str, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"channel order {order_id}: {current} -> {target} is not allowed")


@dataclass(frozen=True, slots=True)
class ChannelOrder:
    """``channel_ref`` is our id for the order toward the channel (the merchant order number
    the channel keeps, often called ``out_trade_no``): the payment id for a payment's first
    attempt on a channel, the attempt's own id for a later one."""

    order_id: str
    payment_id: str
    channel: str
    method: str
    channel_ref: str
    status: OrderStatus
    payer_action: PayerAction | None
    channel_trade_no: str | None
    created_at: datetime
    updated_at: datetime
    route: str | None = None  # why routing chose this channel (JSON; operators only)

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def moved(self, target: OrderStatus, now: datetime, **changes: object) -> ChannelOrder:
        """This attempt in ``target``; raises IllegalOrderTransition outside the table."""
        if target != self.status and target not in ORDER_TRANSITIONS[self.status]:
            raise IllegalOrderTransition(self.order_id, self.status, target)
        return replace(self, status=target, updated_at=now, **changes)  # type: ignore[arg-type]
