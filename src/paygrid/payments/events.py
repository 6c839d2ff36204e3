"""Events of the payment core (支付事件, 退款事件), typed, as other contexts receive them.

This module is the payment core's published language: the ledger and notifications import
it and nothing else of ``paygrid.payments`` (import-linter). It depends on the kernel only.

A payment event carries the payment as the merchant API shows it (``PaymentView``): the
notification's ``data`` is ``view.resource()``, the very JSON ``GET /v1/payments/{id}``
returns; the ledger reads the typed fields it needs. A refund event carries the refund as
``GET /v1/refunds/{id}`` shows it (``RefundView``) and what the ledger needs besides. Amounts are
integers of minor units."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from paygrid.kernel.clock import rfc3339


@dataclass(frozen=True, slots=True)
class Amount:
    total: int  # minor units (fen)
    currency: str  # ISO 4217


@dataclass(frozen=True, slots=True)
class ItemView:
    sku: str
    name: str
    quantity: int
    unit_amount: int


@dataclass(frozen=True, slots=True)
class DiscountView:
    name: str
    amount: int


@dataclass(frozen=True, slots=True)
class PayerActionView:
    """What the payer does next (``qr_code``, ``redirect``, ``form``, ``app_params``)."""

    kind: str
    content: str | None = None
    url: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind}
        if self.content is not None:
            body["content"] = self.content
        if self.url is not None:
            body["url"] = self.url
        if self.fields:
            body["fields"] = dict(self.fields)
        return body


@dataclass(frozen=True, slots=True)
class RefundSummary:
    """One refund as its payment lists it."""

    refund_id: str
    out_refund_no: str
    amount: int
    status: str
    created_at: datetime

    def resource(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "out_refund_no": self.out_refund_no,
            "amount": self.amount,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class PaymentView:
    """The payment resource of the merchant API v1, typed. Field names are the JSON keys."""

    payment_id: str
    mchid: str
    out_trade_no: str
    amount: Amount
    description: str
    status: str
    channel: str | None
    method: str
    cashier_url: str
    notify_url: str
    return_url: str | None
    expire_at: datetime
    attach: str | None
    items: tuple[ItemView, ...]
    discounts: tuple[DiscountView, ...]
    channel_trade_no: str | None
    created_at: datetime
    paid_at: datetime | None
    closed_at: datetime | None
    code_url: str | None = None  # the QR of a native order (kept for v1 clients)
    payer_action: PayerActionView | None = None
    refunded_amount: int | None = None  # on a successful payment
    refunds: tuple[RefundSummary, ...] | None = None  # on a successful payment, oldest first

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "payment_id": self.payment_id,
            "mchid": self.mchid,
            "out_trade_no": self.out_trade_no,
            "amount": {"total": self.amount.total, "currency": self.amount.currency},
            "description": self.description,
            "status": self.status,
            "channel": self.channel,
            "method": self.method,
            "cashier_url": self.cashier_url,
            "notify_url": self.notify_url,
            "return_url": self.return_url,
            "expire_at": rfc3339(self.expire_at),
            "attach": self.attach,
            "items": [
                {"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_amount": i.unit_amount}
                for i in self.items
            ],
            "discounts": [{"name": d.name, "amount": d.amount} for d in self.discounts],
            "channel_trade_no": self.channel_trade_no,
            "created_at": rfc3339(self.created_at),
            "paid_at": rfc3339(self.paid_at) if self.paid_at else None,
            "closed_at": rfc3339(self.closed_at) if self.closed_at else None,
        }
        if self.code_url:
            body["code_url"] = self.code_url
        if self.payer_action is not None:
            body["payer_action"] = self.payer_action.resource()
        if self.refunded_amount is not None:
            body["refunded_amount"] = self.refunded_amount
        if self.refunds is not None:
            body["refunds"] = [r.resource() for r in self.refunds]
        return body


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A change of one payment; the bus orders events by payment id."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    payment: PaymentView

    @property
    def aggregate_id(self) -> str:
        return self.payment.payment_id


@dataclass(frozen=True, slots=True)
class PaymentCreated(PaymentEvent):
    TYPE: ClassVar[str] = "payment.created"


@dataclass(frozen=True, slots=True)
class PaymentSucceeded(PaymentEvent):
    """支付成功: the channel confirmed the amount; the ledger posts the capture voucher."""

    TYPE: ClassVar[str] = "payment.succeeded"


@dataclass(frozen=True, slots=True)
class PaymentClosed(PaymentEvent):
    TYPE: ClassVar[str] = "payment.closed"


@dataclass(frozen=True, slots=True)
class PaymentFailed(PaymentEvent):
    TYPE: ClassVar[str] = "payment.failed"


PAYMENT_EVENTS: tuple[type[PaymentEvent], ...] = (
    PaymentCreated,
    PaymentSucceeded,
    PaymentClosed,
    PaymentFailed,
)


# --- refunds (退款) ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RefundItemView:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class RefundView:
    """The refund resource of the merchant API v1 (``resource()``), typed, and what its
    consumers need besides: the payment's total (the ledger's base for the fee returned) and
    the payment's notify_url (where a refund without its own is announced)."""

    refund_id: str
    mchid: str
    payment_id: str
    out_trade_no: str
    out_refund_no: str
    amount: int  # minor units (fen), in the payment's currency
    currency: str
    reason: str | None
    notify_url: str | None
    items: tuple[RefundItemView, ...]
    status: str  # PROCESSING | SUCCESS | FAILED
    channel: str
    channel_refund_no: str | None
    channel_status: str | None  # the channel's own word (e.g. ABNORMAL), or why it refused
    created_at: datetime
    succeeded_at: datetime | None
    failed_at: datetime | None
    payment_total: int
    payment_notify_url: str

    @property
    def deliver_to(self) -> str:
        """Where the merchant hears of this refund: its notify_url, else its payment's."""
        return self.notify_url or self.payment_notify_url

    def resource(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "mchid": self.mchid,
            "payment_id": self.payment_id,
            "out_trade_no": self.out_trade_no,
            "out_refund_no": self.out_refund_no,
            "amount": self.amount,
            "currency": self.currency,
            "reason": self.reason,
            "notify_url": self.notify_url,
            "items": [{"sku": i.sku, "quantity": i.quantity} for i in self.items],
            "status": self.status,
            "channel": self.channel,
            "channel_refund_no": self.channel_refund_no,
            "channel_status": self.channel_status,
            "created_at": rfc3339(self.created_at),
            "succeeded_at": rfc3339(self.succeeded_at) if self.succeeded_at else None,
            "failed_at": rfc3339(self.failed_at) if self.failed_at else None,
        }


@dataclass(frozen=True, slots=True)
class RefundEvent:
    """A change of one refund. Its aggregate is the payment: the bus orders a payment's refund
    events after its payment.succeeded, so the capture is booked before any refund."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    refund: RefundView

    @property
    def aggregate_id(self) -> str:
        return self.refund.payment_id


@dataclass(frozen=True, slots=True)
class RefundSucceeded(RefundEvent):
    """退款成功: the money went back to the payer; the ledger posts the refund voucher."""

    TYPE: ClassVar[str] = "refund.succeeded"


@dataclass(frozen=True, slots=True)
class RefundFailed(RefundEvent):
    """退款失败 (or closed at the channel): no money moved; the amount is refundable again."""

    TYPE: ClassVar[str] = "refund.failed"


REFUND_EVENTS: tuple[type[RefundEvent], ...] = (RefundSucceeded, RefundFailed)
