"""The payment as the merchant API returns it (and as notifications carry it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from paygrid.kernel.clock import rfc3339
from paygrid.payments.domain import Payment, PaymentStatus


def cashier_url(cashier_base_url: str, payment: Payment) -> str:
    return (
        f"{cashier_base_url.rstrip('/')}/pay/{payment.payment_id}?t={quote(payment.cashier_token)}"
    )


def payment_resource(payment: Payment, cashier_base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payment_id": payment.payment_id,
        "mchid": payment.mchid,
        "out_trade_no": payment.out_trade_no,
        "amount": {"total": payment.amount, "currency": payment.currency},
        "description": payment.description,
        "status": payment.status.value,
        "channel": payment.channel,
        "method": payment.method,
        "cashier_url": cashier_url(cashier_base_url, payment),
        "notify_url": payment.notify_url,
        "return_url": payment.return_url,
        "expire_at": rfc3339(payment.expire_at),
        "attach": payment.attach,
        "items": [
            {"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_amount": i.unit_amount}
            for i in payment.items
        ],
        "discounts": [{"name": d.name, "amount": d.amount} for d in payment.discounts],
        "channel_trade_no": payment.channel_trade_no,
        "created_at": rfc3339(payment.created_at),
        "paid_at": rfc3339(payment.paid_at) if payment.paid_at else None,
        "closed_at": rfc3339(payment.closed_at) if payment.closed_at else None,
    }
    if payment.code_url:
        body["code_url"] = payment.code_url
    if payment.status == PaymentStatus.SUCCESS:
        body["refunded_amount"] = payment.refunded_amount
    return body
