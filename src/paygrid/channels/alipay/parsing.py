"""Alipay's answers and notifies as the port's facts (pure: no I/O).

A field Alipay left out, or sent ill-typed, is None in the fact, never defaulted: the payment
core refuses to act on it. Amounts are yuan strings parsed exactly (``"12.34"`` → 1234 fen);
anything else (a JSON number, a sign, a third decimal, an exponent, non-ASCII digits) is no
amount. Timestamps are Beijing time, ``yyyy-MM-dd HH:mm:ss`` (``gmt_refund`` with millis).

Two things the answers do not say, and why the facts still carry them:

- ``alipay.trade.query`` and the refund calls do not repeat the seller (PID) or the APPID:
  the gateway answers only about trades of the app that signed the request, and the answer is
  verified as Alipay's, so those facts carry our account's ids. A notify does carry
  ``app_id`` and ``seller_id``, and its fact carries exactly those: another app's or seller's
  notify is refused by the core.
- ``TRADE_CLOSED`` is both "closed unpaid" and "paid, then refunded in full". A closed trade
  with a payment time (``send_pay_date``, ``gmt_payment``) was paid: its fact is SUCCESS with
  the original amount, so a refunded payment is never taken for one closed unpaid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from paygrid.channels.alipay.bill import BEIJING, TIME_FORMAT
from paygrid.channels.alipay.client import parse_beijing_time, to_fen
from paygrid.channels.ports import (
    ChannelAccount,
    RefundState,
    RefundTrade,
    Trade,
    TradeState,
)
from paygrid.kernel.money import Money, MoneyError

CURRENCY = "CNY"  # domestic trades: total_amount is yuan by the protocol's definition
TRADE_STATES = {
    "WAIT_BUYER_PAY": TradeState.PENDING,  # scanned or at the cashier, not paid
    "TRADE_SUCCESS": TradeState.SUCCESS,  # paid, refundable
    "TRADE_FINISHED": TradeState.SUCCESS,  # paid, the refund window is over
    "TRADE_CLOSED": TradeState.CLOSED,  # closed unpaid (or refunded in full: see above)
}
REFUND_SUCCESS = "REFUND_SUCCESS"
REFUND_FIELDS = ("refund_fee", "gmt_refund", "out_biz_no")  # a refund's notify carries them
NOTIFY_TYPE = "trade_status_sync"
MAX_FORM_FIELDS = 100
MAX_NOTIFY_ID_CHARS = 128
MAX_RAW_STATE_CHARS = 32
CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gb2312"}
_YUAN = re.compile(r"(0|[1-9][0-9]{0,10})(\.[0-9]{1,2})?")


# --- values -----------------------------------------------------------------------------------


def fen(value: object) -> int | None:
    """An Alipay amount string in fen, exactly; None for anything that is not one."""
    if not isinstance(value, str) or not _YUAN.fullmatch(value):
        return None
    try:
        return to_fen(value)
    except MoneyError:
        return None


def money(value: object) -> Money | None:
    minor = fen(value)
    return Money(minor, CURRENCY) if minor is not None else None


def beijing_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_beijing_time(value)
    except ValueError:
        return None


def expire_text(at: datetime) -> str:
    """``time_expire``: Beijing time to the second, rounded down, so Alipay stops taking the
    payment no later than paygrid expires it."""
    if at.tzinfo is None:
        raise ValueError("expire_at must be timezone-aware")
    return at.astimezone(BEIJING).strftime(TIME_FORMAT)


def opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _raw(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    return value[:MAX_RAW_STATE_CHARS] if isinstance(value, str) else ""


def trade_state(raw: str, paid_at_text: str | None) -> TradeState | None:
    state = TRADE_STATES.get(raw)
    if state is TradeState.CLOSED and paid_at_text is not None:
        return TradeState.SUCCESS  # paid, then refunded in full
    return state


# --- trades -----------------------------------------------------------------------------------


def trade_from_query(node: Mapping[str, Any], account: ChannelAccount) -> Trade:
    """An ``alipay.trade.query`` answer (查询结果) as a fact about our app's trade."""
    raw = _raw(node, "trade_status")
    paid = opt_str(node, "send_pay_date")
    return Trade(
        payment_ref=opt_str(node, "out_trade_no"),
        state=trade_state(raw, paid),
        channel_trade_no=opt_str(node, "trade_no"),
        amount=_trade_amount(node),
        paid_at=beijing_time(paid),
        raw_state=raw,
        merchant_id=account.merchant_id,  # the gateway answers for the calling app only
        app_id=account.app_id,
    )


def trade_from_notify(form: Mapping[str, str]) -> Trade:
    """A payment notify (异步通知) as a fact: the seller and app are the notify's own."""
    raw = _raw(form, "trade_status")
    paid = opt_str(form, "gmt_payment")
    return Trade(
        payment_ref=opt_str(form, "out_trade_no"),
        state=trade_state(raw, paid),
        channel_trade_no=opt_str(form, "trade_no"),
        amount=_trade_amount(form),
        paid_at=beijing_time(paid),
        raw_state=raw,
        merchant_id=opt_str(form, "seller_id"),
        app_id=opt_str(form, "app_id"),
    )


def _trade_amount(data: Mapping[str, Any]) -> Money | None:
    """``total_amount``, the order's total (not ``receipt_amount``, what the seller received
    after Alipay's discounts); None for a trade in another currency (``trans_currency``)."""
    if data.get("trans_currency", CURRENCY) != CURRENCY:
        return None
    return money(data.get("total_amount"))


# --- refunds ----------------------------------------------------------------------------------


def is_refund_notify(form: Mapping[str, str]) -> bool:
    return any(form.get(name) for name in REFUND_FIELDS)


def refund_from_notify(form: Mapping[str, str]) -> RefundTrade:
    """A refund's notify: Alipay notifies only a refund that went through (its trade is
    TRADE_SUCCESS, or TRADE_CLOSED when refunded in full). ``refund_fee`` is the total refunded
    on the trade so far, not this refund's amount: the amount is left None here."""
    return RefundTrade(
        refund_ref=opt_str(form, "out_biz_no"),
        state=RefundState.SUCCESS,
        payment_ref=opt_str(form, "out_trade_no"),
        succeeded_at=beijing_time(form.get("gmt_refund")),
        raw_state=_raw(form, "trade_status"),
        merchant_id=opt_str(form, "seller_id"),
    )


def refund_from_answer(
    node: Mapping[str, Any], refund_ref: str, account: ChannelAccount
) -> RefundTrade | None:
    """An ``alipay.trade.refund`` answer that moved money now (``fund_change`` Y) with this
    refund's amount (``send_back_fee``); None when the answer does not say both, and the refund
    query must tell. The answer does not repeat ``out_request_no``: it answers the call that
    named ``refund_ref``."""
    amount = money(node.get("send_back_fee"))
    if node.get("fund_change") != "Y" or amount is None:
        return None
    return RefundTrade(
        refund_ref=refund_ref,
        state=RefundState.SUCCESS,
        payment_ref=opt_str(node, "out_trade_no"),
        amount=amount,
        succeeded_at=beijing_time(node.get("gmt_refund_pay")),
        raw_state="fund_change=Y",
        merchant_id=account.merchant_id,
    )


def refund_from_query(
    node: Mapping[str, Any], refund_ref: str, account: ChannelAccount
) -> RefundTrade:
    """An ``alipay.trade.fastpay.refund.query`` answer. Without ``refund_status`` Alipay has
    no such refund (never received, or refused): NOT_FOUND, and the same refund may be asked
    again under the same ``out_request_no``. REFUND_SUCCESS is the one success word."""
    raw = node.get("refund_status")
    if raw is None:
        return RefundTrade(
            refund_ref,
            RefundState.NOT_FOUND,
            payment_ref=opt_str(node, "out_trade_no"),
            merchant_id=account.merchant_id,
        )
    return RefundTrade(
        refund_ref=opt_str(node, "out_request_no"),
        state=RefundState.SUCCESS if raw == REFUND_SUCCESS else None,
        payment_ref=opt_str(node, "out_trade_no"),
        amount=money(node.get("refund_amount")),
        succeeded_at=beijing_time(node.get("gmt_refund_pay")),
        raw_state=raw[:MAX_RAW_STATE_CHARS] if isinstance(raw, str) else "",
        merchant_id=account.merchant_id,
    )


# --- the notify's form ------------------------------------------------------------------------


def read_form(body: bytes) -> dict[str, str]:
    """The notify's fields from its URL-encoded body, decoded in its ``charset``. ValueError
    when it is not such a form (not ASCII, a pair without ``=``, a name twice, too many)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the notify is not a URL-encoded form") from None
    charset = "utf-8"
    for name, value in _pairs(text, "latin-1"):
        if name == "charset":
            found = CHARSETS.get(value.lower())
            if found is None:
                raise ValueError(f"unknown charset {value[:20]!r}")
            charset = found
    form: dict[str, str] = {}
    for name, value in _pairs(text, charset):
        if name in form:
            raise ValueError(f"{name[:40]!r} appears twice")
        form[name] = value
    return form


def _pairs(text: str, charset: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding=charset,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise ValueError(f"the notify is not {charset}") from None


def notify_id_of(form: Mapping[str, str]) -> str | None:
    """The notify's id when it is a trade notify we can name; else None."""
    notify_id = form.get("notify_id")
    if form.get("notify_type") != NOTIFY_TYPE or not notify_id:
        return None
    return notify_id if len(notify_id) <= MAX_NOTIFY_ID_CHARS else None
