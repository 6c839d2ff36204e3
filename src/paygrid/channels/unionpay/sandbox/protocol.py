"""The ACP wire rules the sandbox enforces: the request's fields, the respCodes it answers with
(formats/unionpay.md §4; the code table beyond 00/03/04/05/34 is from the specification's
table, unverified), identifiers, and the answer and notification field sets."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from paygrid.channels.unionpay.sandbox.store import Back, Consume
from paygrid.channels.unionpay.signing import ENCODING, SIGN_METHOD, VERSION

BEIJING = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y%m%d%H%M%S"
CONSUME, REFUND, REVOKE, QUERY, FILE_TRANSFER = "01", "04", "31", "00", "76"
GATEWAY_BIZ, QUERY_BIZ = "000201", "000000"
MESSAGES = {
    "00": "成功[0000000]",
    "01": "交易失败",
    "03": "交易通讯超时，请发起查询交易",
    "04": "交易状态未明，请查询对账结果",
    "05": "交易已受理，请稍后查询交易结果",
    "06": "系统繁忙，请稍后再试",
    "10": "报文格式错误",
    "11": "验证签名失败",
    "12": "重复交易",
    "13": "报文交易要素缺失",
    "31": "商户状态不正确",
    "32": "无此交易权限",
    "34": "查无此交易",
    "35": "原交易不存在或状态不正确",
    "36": "与原交易信息不符",
    "39": "交易不在受理时间范围内",
    "98": "文件不存在",
}
PENDING_CODES = ("03", "04", "05")
MAX_FIELDS = 80
MAX_TXN_FEN = 99_999_999_999
ORDER_ID = re.compile(r"^[0-9A-Za-z]{8,32}$")
AMOUNT = re.compile(r"^[1-9][0-9]{0,11}$")
MMDD = re.compile(r"^(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])$")
# the fields every answer echoes from the request
ECHOED = ("version", "encoding", "bizType", "txnType", "txnSubType", "accessType", "merId",
          "orderId", "txnTime")  # fmt: skip


class AcpError(Exception):
    """A request answered with ``code`` (not 00)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code} {MESSAGES.get(code, '')} {detail}".strip())
        self.code = code
        self.detail = detail

    @property
    def message(self) -> str:
        text = MESSAGES.get(self.code, "交易失败")
        return f"{text}[{self.detail}]" if self.detail else text


class SandboxError(Exception):
    """A payer-side (``/sandbox``) request that cannot be done: HTTP status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# --- requests ---------------------------------------------------------------------------------


def read_form(body: bytes) -> dict[str, str]:
    """The request's form fields (URL-encoded UTF-8); 10 when it is not one."""
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise AcpError("10", "not a UTF-8 form") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise AcpError("10", f"{name} twice")
        form[name] = value
    return form


def check_common(form: Mapping[str, str]) -> None:
    """The common fields, before the signature."""
    for name in ("version", "encoding", "signMethod", "txnType", "merId", "certId", "signature"):
        if not form.get(name):
            raise AcpError("13", name)
    if form["version"] != VERSION:
        raise AcpError("10", "version")
    if form["encoding"].upper() != ENCODING:
        raise AcpError("10", "encoding")
    if form["signMethod"] != SIGN_METHOD:
        raise AcpError("10", "signMethod")
    if form.get("accessType", "0") != "0":
        raise AcpError("32", "accessType")


def required(form: Mapping[str, str], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = form.get(name, "")
    if not value:
        raise AcpError("13", name)
    if pattern is not None and not pattern.match(value):
        raise AcpError("10", name)
    return value


def txn_time(form: Mapping[str, str]) -> str:
    value = required(form, "txnTime")
    if parse_time(value) is None:
        raise AcpError("10", "txnTime")
    return value


def parse_time(text: str) -> datetime | None:
    if len(text) != 14 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError:
        return None


def amount(form: Mapping[str, str]) -> int:
    value = required(form, "txnAmt", AMOUNT)
    if form.get("currencyCode", "156") != "156":
        raise AcpError("10", "currencyCode")
    return int(value)


def url_field(form: Mapping[str, str], name: str, *, needed: bool) -> str:
    value = form.get(name, "")
    if not value and not needed:
        return ""
    if not re.match(r"^https?://[^\s/]+", value) or len(value) > 256:
        raise AcpError("10", name)
    return value


# --- identifiers ------------------------------------------------------------------------------


def beijing(epoch: float, fmt: str = TIME_FORMAT) -> str:
    return datetime.fromtimestamp(epoch, BEIJING).strftime(fmt)


def new_query_id(now: float) -> str:
    """21 digits, like UnionPay's 交易流水号: yyMMddhhmmss + 9 random digits."""
    return beijing(now, "%y%m%d%H%M%S") + f"{secrets.randbelow(10**9):09d}"


def new_trace_no() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def new_token() -> str:
    return secrets.token_urlsafe(18)


def masked_card() -> str:
    """A masked debit card number (帐号), 19 digits."""
    return f"621700*********{secrets.randbelow(10**4):04d}"


# --- answers ----------------------------------------------------------------------------------


def answer(form: Mapping[str, str], code: str, message: str | None = None) -> dict[str, str]:
    """An answer's fields before UnionPay signs them: the request's own, respCode, respMsg."""
    fields = {name: form[name] for name in ECHOED if form.get(name)}
    fields.update(respCode=code, respMsg=message or MESSAGES.get(code, "交易失败"))
    return fields


def consume_fields(c: Consume) -> dict[str, str]:
    """A paid consume as a notification or a query tells it."""
    fields = {
        "merId": c.mer_id,
        "orderId": c.order_id,
        "txnTime": c.txn_time,
        "txnAmt": str(c.amount),
        "currencyCode": "156",
        "queryId": c.query_id,
    }
    if c.paid_at is not None:
        fields.update(
            traceNo=c.trace_no,
            traceTime=beijing(c.paid_at, "%m%d%H%M%S"),
            settleAmt=str(c.amount),
            settleCurrencyCode="156",
            settleDate=beijing(c.paid_at, "%m%d"),
            accNo=c.acc_no,
            payType="0001",
            payCardType="01",
        )
    return fields


def back_fields(b: Back) -> dict[str, str]:
    return {
        "merId": b.mer_id,
        "orderId": b.order_id,
        "txnTime": b.txn_time,
        "txnAmt": str(b.amount),
        "currencyCode": "156",
        "queryId": b.query_id,
        "origQryId": b.orig_query_id,
        "traceNo": b.trace_no,
        "traceTime": beijing(b.done_at, "%m%d%H%M%S"),
        "settleAmt": str(b.amount),
        "settleCurrencyCode": "156",
        "settleDate": beijing(b.done_at, "%m%d"),
    }


def consume_notification(c: Consume) -> dict[str, str]:
    """The unsigned back notification of a paid consume (后台通知)."""
    return {
        "version": VERSION,
        "encoding": ENCODING,
        "bizType": GATEWAY_BIZ if c.kind == "front" else QUERY_BIZ,
        "txnType": CONSUME,
        "txnSubType": "01" if c.kind == "front" else "07",
        "accessType": "0",
        **consume_fields(c),
        "respCode": "00",
        "respMsg": MESSAGES["00"],
    }


def back_notification(b: Back) -> dict[str, str]:
    return {
        "version": VERSION,
        "encoding": ENCODING,
        "bizType": GATEWAY_BIZ,
        "txnType": b.txn_type,
        "txnSubType": "00",
        "accessType": "0",
        **back_fields(b),
        "respCode": "00",
        "respMsg": MESSAGES["00"],
    }
