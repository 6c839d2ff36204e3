"""UnionPay's answers and notifications as the port's facts (pure: no I/O).

**Identifiers.** ACP names a transaction by (``merId``, ``orderId``, ``txnTime``), and the
adapter is stateless across processes: both are derived from our reference. ``orderId`` is
the reference without its ``_`` (8–32 letters and digits; ``pay_01J…`` → ``pay01J…``, mapped
back by :func:`ref_of`); ``txnTime`` is the time a paygrid id carries (its first 48 bits, in
Beijing time), so a query, a close or a refund query rebuilds the very key the order was
placed with. A reference that is not a paygrid id is refused.

**respCode** (formats/unionpay.md §4): ``00`` done; ``03``/``04``/``05`` status unknown or
accepted, query later (never a failure); ``34`` on a query "no such transaction" (not yet
paid or never posted: still pending, never failed); ``02``/``06``/``37`` busy or closed for a
while (retryable); any other code is a final refusal. A query's ``origRespCode`` is the
queried transaction's: ``00`` paid, ``03``/``04``/``05`` pending, else failed.

A field UnionPay left out or sent ill-typed is None in the fact, never defaulted: the payment
core refuses to act on it. Amounts are ``txnAmt``: whole fen, digits only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from paygrid.channels.ports import (
    ChannelAccount,
    RefundState,
    RefundTrade,
    Trade,
    TradeState,
)
from paygrid.kernel.ids import timestamp_ms_of
from paygrid.kernel.money import Money

BEIJING = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y%m%d%H%M%S"  # txnTime, payTimeout
CURRENCY = "CNY"
CURRENCY_CODE = "156"
SUCCESS = "00"
PENDING_CODES = frozenset({"03", "04", "05"})  # 交易状态未明 / 受理: query later
NOT_FOUND_CODE = "34"  # 查无此交易
RETRYABLE_CODES = frozenset({"02", "06", "37"})  # 系统未开放, 系统繁忙, 操作过于频繁
CONSUME, REFUND, REVOKE, QUERY, FILE_TRANSFER = "01", "04", "31", "00", "76"
MAX_TXN_FEN = 99_999_999_999  # twelve digits
MAX_RAW_STATE_CHARS = 32
ORDER_ID = re.compile(r"[0-9A-Za-z]{8,32}")
_PAYGRID_REF = re.compile(r"([a-z]{2,5})_([0-9A-HJKMNP-TV-Z]{26})")
_PAYGRID_ORDER_ID = re.compile(r"([a-z]{2,5})([0-9A-HJKMNP-TV-Z]{26})")
_FEN = re.compile(r"[1-9][0-9]{0,11}|0")


# --- identifiers ------------------------------------------------------------------------------


def order_id_of(ref: str) -> str:
    """Our reference as ACP's ``orderId``; ValueError when it is not a paygrid id."""
    match = _PAYGRID_REF.fullmatch(ref)
    if match is None:
        raise ValueError(f"{ref[:40]!r} is not a paygrid id (prefix_ + 26 characters)")
    order_id = match.group(1) + match.group(2)
    assert ORDER_ID.fullmatch(order_id), order_id
    return order_id


def ref_of(order_id: str) -> str | None:
    """``orderId`` back to our reference; None for one we could not have sent."""
    match = _PAYGRID_ORDER_ID.fullmatch(order_id)
    return f"{match.group(1)}_{match.group(2)}" if match else None


def txn_time_of(ref: str) -> str:
    """``txnTime`` of the transaction named by ``ref``: the id's own time, Beijing."""
    if _PAYGRID_REF.fullmatch(ref) is None:
        raise ValueError(f"{ref[:40]!r} is not a paygrid id")
    at = datetime.fromtimestamp(timestamp_ms_of(ref) / 1000, BEIJING)
    return at.strftime(TIME_FORMAT)


def beijing_text(at: datetime) -> str:
    """``YYYYMMDDhhmmss`` Beijing, rounded down to the second (payTimeout: never later)."""
    if at.tzinfo is None:
        raise ValueError("a timezone-aware time is needed")
    return at.astimezone(BEIJING).strftime(TIME_FORMAT)


def parse_beijing(text: object) -> datetime | None:
    if not isinstance(text, str) or len(text) != 14 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError:
        return None


def fen(value: object) -> int | None:
    """``txnAmt``: whole fen, digits only, no sign, no leading zero."""
    if not isinstance(value, str) or not _FEN.fullmatch(value):
        return None
    return int(value)


def money(fields: Mapping[str, str]) -> Money | None:
    """The transaction's amount; None unless in CNY (``currencyCode`` 156) and well-formed."""
    if fields.get("currencyCode", CURRENCY_CODE) != CURRENCY_CODE:
        return None
    minor = fen(fields.get("txnAmt"))
    return Money(minor, CURRENCY) if minor is not None else None


def opt(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name)
    return value if isinstance(value, str) and value else None


def raw(code: str | None) -> str:
    return (code or "")[:MAX_RAW_STATE_CHARS]


# --- respCode -------------------------------------------------------------------------------


def result_state(code: str | None) -> TradeState | None:
    """A consume's result code (a notification's respCode, a query's origRespCode)."""
    if code is None or not code.isalnum() or len(code) != 2:
        return None
    if code == SUCCESS:
        return TradeState.SUCCESS
    if code in PENDING_CODES:
        return TradeState.PENDING
    return TradeState.FAILED


def refund_state(code: str | None) -> RefundState | None:
    state = result_state(code)
    if state is None:
        return None
    return {
        TradeState.SUCCESS: RefundState.SUCCESS,
        TradeState.PENDING: RefundState.PROCESSING,
        TradeState.FAILED: RefundState.FAILED,
    }[state]


# --- consumes -------------------------------------------------------------------------------


def trade_from(
    fields: Mapping[str, str], code: str | None, kinds: tuple[str, ...] = (CONSUME,)
) -> Trade:
    """A consume as UnionPay reports it: ``code`` is the notification's respCode or the
    query's origRespCode; ``kinds`` the txnType the report may carry. The merchant is the
    report's own ``merId``."""
    order_id = opt(fields, "orderId")
    state = result_state(code)
    return Trade(
        payment_ref=ref_of(order_id) if order_id else None,
        state=state,
        channel_trade_no=opt(fields, "queryId"),
        amount=money(fields),
        paid_at=None,  # traceTime has no year, txnTime is the order's: the core's clock
        raw_state=raw(code),
        merchant_id=opt(fields, "merId"),
        defect=_defect(fields, kinds) if state is not None else None,
    )


def trade_from_query(fields: Mapping[str, str], ref: str, account: ChannelAccount) -> Trade:
    """A query answer about the consume ``ref``: 34 (not there yet) is PENDING."""
    if fields.get("respCode") == NOT_FOUND_CODE:
        return Trade(ref, TradeState.PENDING, raw_state=NOT_FOUND_CODE,
                     merchant_id=account.merchant_id)  # fmt: skip
    return trade_from(fields, opt(fields, "origRespCode"), (QUERY, CONSUME))


def _defect(fields: Mapping[str, str], kinds: tuple[str, ...]) -> str | None:
    given = fields.get("txnType")
    if given is not None and given not in kinds:
        return f"a txnType {given[:4]!r} report where {'/'.join(kinds)} was expected"
    return None


# --- refunds and revokes --------------------------------------------------------------------


def refund_from(
    fields: Mapping[str, str], code: str | None, kinds: tuple[str, ...] = (REFUND, REVOKE)
) -> RefundTrade:
    """A refund (04) or revoke (31) as reported: its own orderId is our refund reference;
    the payment it gives back is named only by ``origQryId`` (payment_ref left None)."""
    order_id = opt(fields, "orderId")
    state = refund_state(code)
    return RefundTrade(
        refund_ref=ref_of(order_id) if order_id else None,
        state=state,
        channel_refund_no=opt(fields, "queryId"),
        amount=money(fields),
        succeeded_at=None,
        raw_state=raw(code),
        merchant_id=opt(fields, "merId"),
        defect=_defect(fields, kinds) if state is not None else None,
    )


def refund_from_query(fields: Mapping[str, str], ref: str, account: ChannelAccount) -> RefundTrade:
    """A query answer about the refund ``ref``: 34 is NOT_FOUND (it may be sent again under
    the same orderId and txnTime: UnionPay takes it once)."""
    if fields.get("respCode") == NOT_FOUND_CODE:
        return RefundTrade(ref, RefundState.NOT_FOUND, raw_state=NOT_FOUND_CODE,
                           merchant_id=account.merchant_id)  # fmt: skip
    return refund_from(fields, opt(fields, "origRespCode"), (QUERY, REFUND, REVOKE))


def notify_id_of(fields: Mapping[str, str]) -> str | None:
    """A notification has no id of its own: ``<txnType>:<queryId>`` names it (a transaction
    notifies its one result, so every retry and duplicate carries the same)."""
    txn_type, query_id = opt(fields, "txnType"), opt(fields, "queryId")
    if txn_type is None or query_id is None or len(query_id) > 40:
        return None
    return f"{txn_type}:{query_id}"
