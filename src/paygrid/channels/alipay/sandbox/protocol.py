"""The gateway wire rules the sandbox enforces: the error node, the common parameters (公共参数),
``biz_content`` fields, amounts and expiry, and the nodes and forms it answers with."""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_to_bytes

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.bill import BEIJING, TIME_FORMAT, yuan_text
from paygrid.channels.alipay.sandbox.store import Refund, Trade
from paygrid.kernel.money import MoneyError, parse_major

PRECREATE = "alipay.trade.precreate"
PAGE_PAY = "alipay.trade.page.pay"
WAP_PAY = "alipay.trade.wap.pay"
QUERY = "alipay.trade.query"
CLOSE = "alipay.trade.close"
REFUND = "alipay.trade.refund"
REFUND_QUERY = "alipay.trade.fastpay.refund.query"
BILL_QUERY = "alipay.data.dataservice.bill.downloadurl.query"
BROWSER_METHODS = {PAGE_PAY: "page", WAP_PAY: "wap"}
SERVER_METHODS = (PRECREATE, QUERY, CLOSE, REFUND, REFUND_QUERY, BILL_QUERY)
PRODUCT_CODES = {
    "page": ("FAST_INSTANT_TRADE_PAY",),
    "wap": ("QUICK_WAP_WAY", "QUICK_WAP_PAY"),  # the second is python-alipay-sdk's
    "precreate": ("FACE_TO_FACE_PAYMENT",),
}
MESSAGES = {
    "10000": "Success",
    "20000": "Service Currently Unavailable",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
}
VISIBLE = ("WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_CLOSED", "TRADE_FINISHED")
CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gb2312"}
MAX_PARAMS = 64
MAX_TOTAL_FEN = 10_000_000_000  # 100,000,000.00 yuan
DEFAULT_EXPIRY = timedelta(days=15)
MAX_EXPIRY = timedelta(days=15)
QR_SCAN_WINDOW = timedelta(hours=2)  # a precreated QR is scannable two hours at most
OUT_NO = re.compile(r"^[A-Za-z0-9_]{1,64}$")
OUT_REQUEST_NO = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
_TIMEOUT = re.compile(r"^(\d{1,5})([mhd])$")
_ALNUM = string.ascii_lowercase + string.digits


class GatewayError(Exception):
    """An answer other than 10000, as a node: code, msg, sub_code, sub_msg and any extras."""

    def __init__(
        self, code: str, sub_code: str, sub_msg: str, extra: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code} {sub_code}: {sub_msg}")
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.extra = dict(extra or {})

    def node(self) -> dict[str, str]:
        return {
            "code": self.code,
            "msg": MESSAGES[self.code],
            "sub_code": self.sub_code,
            "sub_msg": self.sub_msg,
            **self.extra,
        }


def missing(name: str) -> GatewayError:
    return GatewayError("40001", f"isv.missing-{name}", f"缺少参数 {name}")


def invalid(sub_code: str, sub_msg: str) -> GatewayError:
    return GatewayError("40002", sub_code, sub_msg)


def business(sub_code: str, sub_msg: str, **extra: str) -> GatewayError:
    return GatewayError("40004", sub_code, sub_msg, extra)


def bad_param(message: str) -> GatewayError:
    return business("ACQ.INVALID_PARAMETER", f"参数无效: {message}")


class SandboxError(Exception):
    """A payer-side (``/sandbox``) request that cannot be done: HTTP status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


UNAVAILABLE = GatewayError("20000", "isp.unknow-error", "系统繁忙")


# --- request parameters -----------------------------------------------------------------------


def decode_params(query: bytes, body: bytes) -> dict[str, str]:
    """The request's parameters from the query string and the form body, decoded in the
    request's ``charset``; the first occurrence of a name wins."""
    pairs = _pairs(query) + _pairs(body)
    if len(pairs) > MAX_PARAMS:
        raise invalid("isv.invalid-parameter", "参数过多")
    raw_charset = next((v for k, v in pairs if k == b"charset"), b"utf-8")
    charset = CHARSETS.get(raw_charset.decode("ascii", "replace").lower())
    if charset is None:
        raise invalid("isv.invalid-charset", "字符集错误")
    params: dict[str, str] = {}
    try:
        for key, value in pairs:
            params.setdefault(key.decode(charset), value.decode(charset))
    except UnicodeDecodeError as exc:
        raise invalid("isv.invalid-encoding", "参数编码与 charset 不一致") from exc
    return params


def _pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    """``a=1&b=%E4%B8%AD`` as raw byte pairs, percent-decoded; not yet in any charset."""
    pairs = []
    for part in raw.split(b"&", MAX_PARAMS + 1):
        if part:
            key, _, value = part.partition(b"=")
            pairs.append((_unquote(key), _unquote(value)))
    return pairs


def _unquote(text: bytes) -> bytes:
    return unquote_to_bytes(text.replace(b"+", b" "))


def check_common(params: Mapping[str, str]) -> str:
    """The common parameters before the signature check; returns the method."""
    for name in ("app_id", "method"):
        if not params.get(name):
            raise missing(name.replace("_", "-"))
    method = params["method"]
    if method not in SERVER_METHODS and method not in BROWSER_METHODS:
        raise invalid("isv.invalid-method", "不存在的方法名")
    for name, sub in (("version", "version"), ("sign_type", "signature-type")):
        if not params.get(name):
            raise missing(sub)
    if params["version"] != "1.0":
        raise invalid("isv.invalid-version", "版本号错误")
    if params["sign_type"] != signing.SIGN_TYPE:
        raise invalid("isv.invalid-signature-type", "签名类型错误，本应用仅支持 RSA2")
    if not params.get("sign"):
        raise missing("signature")
    if not params.get("timestamp"):
        raise missing("timestamp")
    try:
        datetime.strptime(params["timestamp"], TIME_FORMAT)
    except ValueError as exc:
        raise invalid("isv.invalid-timestamp", "非法的时间戳参数") from exc
    if params.get("format", "JSON").upper() != "JSON":
        raise invalid("isv.invalid-format", "参数格式错误")
    return method


def biz_content(params: Mapping[str, str]) -> dict[str, Any]:
    """``biz_content`` as a JSON object, every number kept as its exact text."""
    text = params.get("biz_content")
    if not text:
        raise bad_param("缺少 biz_content")
    try:
        data = json.loads(text, parse_float=str, parse_int=str)
    except (ValueError, RecursionError) as exc:
        raise bad_param("biz_content 不是合法的 JSON") from exc
    if not isinstance(data, dict):
        raise bad_param("biz_content 必须是 JSON 对象")
    return data


def text_field(
    biz: Mapping[str, Any], name: str, high: int, pattern: re.Pattern[str] | None = None
) -> str | None:
    """An optional string field (None when absent or empty), bounded and matching ``pattern``."""
    value = biz.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > high:
        raise bad_param(f"{name} 必须是不超过 {high} 个字符的字符串")
    if pattern is not None and not pattern.match(value):
        raise bad_param(f"{name} 格式错误")
    return value


def required(
    biz: Mapping[str, Any], name: str, high: int, pattern: re.Pattern[str] | None = None
) -> str:
    value = text_field(biz, name, high, pattern)
    if value is None:
        raise bad_param(f"缺少 {name}")
    return value


def amount_field(biz: Mapping[str, Any], name: str) -> int:
    """A yuan amount (string or JSON number), exactly in fen: 0.01 to 100000000.00."""
    value = biz.get(name)
    if value is None or value == "":
        raise bad_param(f"缺少 {name}")
    if not isinstance(value, str) or not AMOUNT.match(value):
        raise bad_param(f"{name} 必须是最多两位小数的金额（元）")
    try:
        fen = parse_major(value, "CNY")
    except MoneyError as exc:
        raise bad_param(f"{name}: {exc}") from exc
    if not 0 < fen <= MAX_TOTAL_FEN:
        raise bad_param(f"{name} 必须在 0.01 到 100000000.00 之间")
    return fen


def expiry(biz: Mapping[str, Any], now: float) -> float:
    """When an unpaid trade closes: ``time_expire`` (Beijing time), else ``timeout_express``
    (``90m``, ``2h``, ``1d``, ``1c`` = end of today), else fifteen days; fifteen days at most."""
    start = datetime.fromtimestamp(now, BEIJING)
    time_expire = text_field(biz, "time_expire", 32)
    timeout = text_field(biz, "timeout_express", 8)
    if time_expire is not None:
        try:
            at = datetime.strptime(time_expire, TIME_FORMAT).replace(tzinfo=BEIJING)
        except ValueError as exc:
            raise bad_param("time_expire 格式为 yyyy-MM-dd HH:mm:ss") from exc
        if at <= start:
            raise bad_param("time_expire 早于当前时间")
    elif timeout == "1c":
        at = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    elif timeout is not None:
        match = _TIMEOUT.match(timeout)
        if match is None or int(match.group(1)) < 1:
            raise bad_param("timeout_express 取值 1m～15d")
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        at = start + timedelta(**{unit: int(match.group(1))})
    else:
        at = start + DEFAULT_EXPIRY
    if at - start > MAX_EXPIRY:
        raise bad_param("订单有效期最长 15d")
    return at.timestamp()


# --- identifiers ------------------------------------------------------------------------------


def beijing(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, BEIJING).strftime(TIME_FORMAT)


def beijing_millis(epoch: float) -> str:
    """``gmt_refund`` carries milliseconds: 2015-04-28 15:45:57.320."""
    at = datetime.fromtimestamp(epoch, BEIJING)
    return f"{at.strftime(TIME_FORMAT)}.{at.microsecond // 1000:03d}"


def new_trade_no(now: float) -> str:
    """28 digits like a real 支付宝交易号: date, 2200, 16 random digits."""
    day = datetime.fromtimestamp(now, BEIJING).strftime("%Y%m%d")
    return f"{day}2200{secrets.randbelow(10**16):016d}"


def new_token() -> str:
    """The QR code's tail, shaped like Alipay's ``bax…``."""
    return "bax" + "".join(secrets.choice(_ALNUM) for _ in range(21))


def new_buyer() -> tuple[str, str]:
    """(buyer_id 2088…, masked buyer_logon_id)."""
    phone = f"1{secrets.randbelow(90) + 10}****{secrets.randbelow(10**4):04d}"
    return f"2088{secrets.randbelow(10**12):012d}", phone


def new_notify_id() -> str:
    return secrets.token_hex(17)


# --- answers ----------------------------------------------------------------------------------


def trade_node(trade: Trade) -> dict[str, Any]:
    """The ``alipay.trade.query`` answer (交易查询)."""
    paid = trade.total if trade.paid_at is not None else 0
    node: dict[str, Any] = {
        "code": "10000",
        "msg": "Success",
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_logon_id": trade.buyer_logon_id,
        "trade_status": trade.status,
        "total_amount": yuan_text(trade.total),
        "buyer_pay_amount": yuan_text(paid),
        "point_amount": "0.00",
        "invoice_amount": yuan_text(paid),
        "receipt_amount": yuan_text(paid),
        "buyer_user_id": trade.buyer_id,
        "buyer_user_type": "PRIVATE",
    }
    if trade.paid_at is not None:
        node["send_pay_date"] = beijing(trade.paid_at)
        node["fund_bill_list"] = [{"fund_channel": "ALIPAYACCOUNT", "amount": yuan_text(paid)}]
    if trade.store_id:
        node["store_id"] = trade.store_id
    return node


def notify_fields(
    trade: Trade, seller_id: str, now: float, refund: Refund | None = None
) -> dict[str, str]:
    """The unsigned asynchronous notify (异步通知) for the trade's current status."""
    paid = trade.total if trade.paid_at is not None else 0
    fields = {
        "notify_time": beijing(now),
        "notify_type": "trade_status_sync",
        "notify_id": new_notify_id(),
        "app_id": trade.app_id,
        "auth_app_id": trade.app_id,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_id": trade.buyer_id,
        "buyer_logon_id": trade.buyer_logon_id,
        "seller_id": seller_id,
        "trade_status": trade.status,
        "total_amount": yuan_text(trade.total),
        "receipt_amount": yuan_text(paid),
        "invoice_amount": yuan_text(paid),
        "buyer_pay_amount": yuan_text(paid),
        "point_amount": "0.00",
        "subject": trade.subject,
        "body": trade.body,
        "passback_params": trade.passback_params,
        "gmt_create": beijing(trade.created_at or trade.requested_at),
        "gmt_payment": beijing(trade.paid_at) if trade.paid_at is not None else "",
        "gmt_close": beijing(trade.closed_at) if trade.closed_at is not None else "",
    }
    if trade.paid_at is not None:
        fund = [{"amount": yuan_text(paid), "fundChannel": "ALIPAYACCOUNT"}]
        fields["fund_bill_list"] = json.dumps(fund, separators=(",", ":"))
    if refund is not None:
        fields["refund_fee"] = yuan_text(trade.refunded)
        fields["gmt_refund"] = beijing_millis(refund.refunded_at)
        fields["out_biz_no"] = refund.out_request_no
    return {k: v for k, v in fields.items() if v}  # Alipay leaves empty fields out


def return_params(trade: Trade, seller_id: str, now: float) -> dict[str, str]:
    """The unsigned parameters of the browser's return to ``return_url`` (同步跳转)."""
    method = PAGE_PAY if trade.kind == "page" else WAP_PAY
    return {
        "charset": "utf-8",
        "out_trade_no": trade.out_trade_no,
        "method": f"{method}.return",
        "total_amount": yuan_text(trade.total),
        "trade_no": trade.trade_no,
        "auth_app_id": trade.app_id,
        "version": "1.0",
        "app_id": trade.app_id,
        "seller_id": seller_id,
        "timestamp": beijing(now),
    }
