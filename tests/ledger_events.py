"""payment.succeeded and refund.succeeded events as the payment core emits them, for tests that
drive the ledger consumer without a payment behind them."""

from __future__ import annotations

from datetime import timedelta

from paygrid.bus.codec import event_data
from paygrid.bus.ports import Event
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.payments.events import (
    Amount,
    PaymentSucceeded,
    PaymentView,
    RefundSucceeded,
    RefundView,
)


def paid(mchid: str, amount: int, channel: str = "wechatpay") -> Event:
    now = utcnow()
    payment_id = new_id("pay")
    view = PaymentView(
        payment_id=payment_id,
        mchid=mchid,
        out_trade_no=new_id("o"),
        amount=Amount(amount, "CNY"),
        description="d",
        status="SUCCESS",
        channel=channel,
        method="native",
        cashier_url="http://cashier",
        notify_url="http://127.0.0.1:9/n",
        return_url=None,
        expire_at=now + timedelta(hours=1),
        attach=None,
        items=(),
        discounts=(),
        channel_trade_no="t",
        created_at=now,
        paid_at=now,
        closed_at=None,
    )
    data = event_data(PaymentSucceeded(view))
    return Event(new_id("evt"), PaymentSucceeded.TYPE, payment_id, now, data)


def refunded(payment: Event, amount: int) -> Event:
    """A successful refund of ``amount`` of the payment ``payment`` announced."""
    now = utcnow()
    p = payment.payload["payment"]
    view = RefundView(
        refund_id=new_id("rfd"),
        mchid=p["mchid"],
        payment_id=p["payment_id"],
        out_trade_no=p["out_trade_no"],
        out_refund_no=new_id("or"),
        amount=amount,
        currency="CNY",
        reason=None,
        notify_url=None,
        items=(),
        status="SUCCESS",
        channel=p["channel"],
        channel_refund_no="r",
        channel_status="SUCCESS",
        created_at=now,
        succeeded_at=now,
        failed_at=None,
        payment_total=p["amount"]["total"],
        payment_notify_url=p["notify_url"],
    )
    data = event_data(RefundSucceeded(view))
    return Event(new_id("evt"), RefundSucceeded.TYPE, view.payment_id, now, data)
