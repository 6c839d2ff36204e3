"""WeChat Pay's answers and notifications as the port's facts (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from paygrid.channels.ports import RefundState, RefundTrade, Trade, TradeState
from paygrid.channels.wechatpay import signing
from paygrid.channels.wechatpay.refunds import RefundResult, RefundStatus
from paygrid.kernel.money import Money, MoneyError

CHINA = timezone(timedelta(hours=8))
MAX_NOTIFY_ID_CHARS = 128
TRADE_STATES = {
    "NOTPAY": TradeState.PENDING,
    "USERPAYING": TradeState.PENDING,
    "ACCEPT": TradeState.PENDING,
    "SUCCESS": TradeState.SUCCESS,
    "REFUND": TradeState.SUCCESS,
    "CLOSED": TradeState.CLOSED,
    "REVOKED": TradeState.CLOSED,
    "PAYERROR": TradeState.FAILED,
}
# ABNORMAL (退款异常: the payer's account could not take the money back) is not an end: the
# money is held at WeChat until the merchant re-routes it, so paygrid keeps the refund
# PROCESSING (the amount stays reserved) and `paygrid check` lists it (docs/refunds.md).
REFUND_STATES = {
    RefundStatus.PROCESSING: RefundState.PROCESSING,
    RefundStatus.ABNORMAL: RefundState.PROCESSING,
    RefundStatus.SUCCESS: RefundState.SUCCESS,
    RefundStatus.CLOSED: RefundState.FAILED,
}


def refund_trade(result: RefundResult) -> RefundTrade:
    """A WeChat refund (answer, query or notification) as the port's fact."""
    amount = None
    if result.refund is not None:
        try:
            amount = Money(result.refund, result.currency or "CNY")
        except MoneyError:
            amount = None
    return RefundTrade(
        refund_ref=result.refund_ref,
        state=REFUND_STATES.get(result.status) if result.status is not None else None,
        payment_ref=result.payment_ref,
        channel_refund_no=result.channel_refund_id,
        amount=amount,
        succeeded_at=result.succeeded_at,
        raw_state=result.raw_status,
        merchant_id=result.merchant_id,
    )


def trade_from_transaction(data: Mapping[str, Any]) -> Trade:
    """A WeChat Transaction object (查询结果/回调明文) as a :class:`Trade` fact. A field WeChat
    left out or sent ill-typed is None, never defaulted: the payment core refuses to act on it."""
    raw_state = data.get("trade_state")
    raw = raw_state if isinstance(raw_state, str) else ""
    return Trade(
        payment_ref=opt_str(data, "out_trade_no"),
        state=TRADE_STATES.get(raw),
        channel_trade_no=opt_str(data, "transaction_id"),
        amount=_amount(data.get("amount")),
        paid_at=_time(opt_str(data, "success_time")),
        raw_state=raw[:32],
        merchant_id=opt_str(data, "mchid"),
        app_id=opt_str(data, "appid"),
    )


def notification_resource(envelope: object) -> tuple[str, dict[str, Any]]:
    """The notify id and the encrypted resource of a payment notification envelope."""
    if not isinstance(envelope, dict):
        raise ValueError("envelope is not an object")
    notify_id = envelope.get("id")
    if not isinstance(notify_id, str) or not 0 < len(notify_id) <= MAX_NOTIFY_ID_CHARS:
        raise ValueError("callback without a usable id")
    event_type = envelope.get("event_type", "")
    if not isinstance(event_type, str) or not event_type.startswith("TRANSACTION."):
        raise ValueError(f"unsupported event_type {event_type!r}")
    resource = envelope.get("resource")
    if envelope.get("resource_type") != "encrypt-resource" or not isinstance(resource, dict):
        raise ValueError("resource is not an encrypt-resource")
    if resource.get("algorithm") != signing.AEAD_ALGORITHM:
        raise ValueError(f"unsupported algorithm {resource.get('algorithm')!r}")
    for name in ("nonce", "ciphertext", "associated_data"):
        if not isinstance(resource.get(name), str):
            raise ValueError(f"resource.{name} is not a string")
    return notify_id, resource


def _amount(amount: object) -> Money | None:
    """``amount.total`` (integer fen) and ``amount.currency``, or None if either is absent,
    ill-typed or not money. ``payer_total`` (less than total after a coupon) is not the order's
    amount and is not used."""
    if not isinstance(amount, dict):
        return None
    total, currency = amount.get("total"), amount.get("currency")
    if type(total) is not int or not isinstance(currency, str):
        return None
    try:
        return Money(total, currency)
    except MoneyError:
        return None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def rfc3339_china(at: datetime) -> str:
    """``time_expire`` as WeChat wants it: 2018-06-08T10:34:56+08:00."""
    if at.tzinfo is None:
        raise ValueError("expire_at must be timezone-aware")
    return at.astimezone(CHINA).isoformat(timespec="seconds")


def opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None
