"""The payment as the merchant API returns it (and as its events and notifications carry it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from paygrid.payments.domain import Payment, PaymentStatus, Refund
from paygrid.payments.events import (
    Amount,
    DiscountView,
    ItemView,
    PayerActionView,
    PaymentView,
    RefundItemView,
    RefundSummary,
    RefundView,
)


def cashier_url(cashier_base_url: str, payment: Payment) -> str:
    return (
        f"{cashier_base_url.rstrip('/')}/pay/{payment.payment_id}?t={quote(payment.cashier_token)}"
    )


def payment_view(payment: Payment, cashier_base_url: str) -> PaymentView:
    order = payment.order
    action = payment.payer_action
    return PaymentView(
        payment_id=payment.payment_id,
        mchid=payment.mchid,
        out_trade_no=payment.out_trade_no,
        amount=Amount(payment.amount, payment.currency),
        description=payment.description,
        status=payment.status.value,
        channel=payment.channel,
        method=order.method if order is not None else payment.method,
        cashier_url=cashier_url(cashier_base_url, payment),
        notify_url=payment.notify_url,
        return_url=payment.return_url,
        expire_at=payment.expire_at,
        attach=payment.attach,
        items=tuple(ItemView(i.sku, i.name, i.quantity, i.unit_amount) for i in payment.items),
        discounts=tuple(DiscountView(d.name, d.amount) for d in payment.discounts),
        channel_trade_no=payment.channel_trade_no,
        created_at=payment.created_at,
        paid_at=payment.paid_at,
        closed_at=payment.closed_at,
        code_url=payment.code_url,
        payer_action=(
            PayerActionView(action.kind.value, action.content, action.url, dict(action.fields))
            if action is not None
            else None
        ),
        refunded_amount=payment.refunded_amount
        if payment.status == PaymentStatus.SUCCESS
        else None,
        refunds=refund_summaries(payment),
    )


def payment_resource(payment: Payment, cashier_base_url: str) -> dict[str, Any]:
    return payment_view(payment, cashier_base_url).resource()


def refund_summaries(payment: Payment) -> tuple[RefundSummary, ...] | None:
    if payment.status != PaymentStatus.SUCCESS:
        return None
    return tuple(
        RefundSummary(r.refund_id, r.out_refund_no, r.amount, r.status.value, r.created_at)
        for r in payment.refunds
    )


def refund_view(refund: Refund, payment: Payment) -> RefundView:
    """The refund as the merchant API returns it (and as its events carry it)."""
    assert refund.payment_id == payment.payment_id
    return RefundView(
        refund_id=refund.refund_id,
        mchid=refund.mchid,
        payment_id=refund.payment_id,
        out_trade_no=payment.out_trade_no,
        out_refund_no=refund.out_refund_no,
        amount=refund.amount,
        currency=refund.currency,
        reason=refund.reason,
        notify_url=refund.notify_url,
        items=tuple(RefundItemView(i.sku, i.quantity) for i in refund.items),
        status=refund.status.value,
        channel=refund.channel,
        channel_refund_no=refund.channel_refund_no,
        channel_status=refund.channel_state,
        created_at=refund.created_at,
        succeeded_at=refund.succeeded_at,
        failed_at=refund.failed_at,
        payment_total=payment.amount,
        payment_notify_url=payment.notify_url,
    )
