"""The WeChat Pay API v3 wire rules the sandbox enforces: error shape, request validation
(参数校验), and the Transaction object (订单详情) it answers with."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from paygrid.channels.wechatpay.bill import BEIJING
from paygrid.channels.wechatpay.sandbox.store import Order

ORDER_KINDS = {"native": "NATIVE", "jsapi": "JSAPI", "h5": "MWEB", "app": "APP"}
STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "CLOSED": "订单已关闭",
    "PAYERROR": "支付失败，请重新下单支付",
    "REFUND": "转入退款",
}
PAID = ("SUCCESS", "REFUND")
CODE_URL_PREFIX = "weixin://wxpay/bizpayurl?pr="
PUBLIC_KEY_ID_PREFIX = "PUB_KEY_ID_"
BILL_URL_TTL_SECONDS = 300
MAX_TOTAL_FEN = 10**12
_OUT_TRADE_NO = re.compile(r"^[A-Za-z0-9_*|\-]{6,32}$")
_BILL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOKEN_ALPHABET = string.ascii_letters + string.digits


class ApiError(Exception):
    """An error answer in WeChat's shape: HTTP status and ``{"code", "message"[, "detail"]}``."""

    def __init__(
        self, status: int, code: str, message: str, detail: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = dict(detail) if detail else None

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail:
            out["detail"] = self.detail
        return out


def param_error(field: str, message: str) -> ApiError:
    return ApiError(400, "PARAM_ERROR", message, {"field": field, "location": "body"})


def beijing_time(epoch: float) -> str:
    """RFC 3339 in Beijing time, as WeChat writes it: 2018-06-08T10:34:56+08:00."""
    return datetime.fromtimestamp(epoch, BEIJING).isoformat(timespec="seconds")


def new_token(length: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def new_transaction_id(now: float) -> str:
    """28 digits like a real 微信支付订单号: 4200 prefix, date, random."""
    day = datetime.fromtimestamp(now, BEIJING).strftime("%Y%m%d")
    return f"420000{secrets.randbelow(10**4):04d}{day}{secrets.randbelow(10**10):010d}"


def json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "PARAM_ERROR", "请求体不是合法的 JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "PARAM_ERROR", "请求体必须是 JSON 对象")
    return data


def text_field(data: Mapping[str, Any], name: str, low: int, high: int, where: str = "") -> str:
    value = data.get(name)
    field = f"{where}/{name}"
    if value is None:
        raise param_error(field, f"缺少参数 {field}")
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise param_error(field, f"{field} 必须是长度 {low}-{high} 的字符串")
    return value


def _optional_text(data: Mapping[str, Any], name: str, high: int) -> str | None:
    return None if data.get(name) is None else text_field(data, name, 0, high)


def _object(data: Mapping[str, Any], name: str, where: str = "") -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise param_error(f"{where}/{name}", f"缺少参数 {where}/{name}")
    return value


@dataclass(frozen=True, slots=True)
class OrderFields:
    appid: str
    mchid: str
    description: str
    out_trade_no: str
    notify_url: str
    total: int
    attach: str
    time_expire: str | None
    expire_at: float | None
    payer_openid: str | None


def validate_order(kind: str, data: Mapping[str, Any], now: float) -> OrderFields:
    appid = text_field(data, "appid", 1, 32)
    mchid = text_field(data, "mchid", 1, 32)
    description = text_field(data, "description", 1, 127)
    out_trade_no = text_field(data, "out_trade_no", 6, 32)
    if not _OUT_TRADE_NO.match(out_trade_no):
        raise param_error("/out_trade_no", "out_trade_no 只能是数字、大小写字母和 _-|*")
    notify_url = _notify_url(text_field(data, "notify_url", 1, 256))
    total = _amount(_object(data, "amount"))
    time_expire, expire_at = _time_expire(data.get("time_expire"), now)
    payer_openid = None
    if kind == "jsapi":
        payer_openid = text_field(_object(data, "payer"), "openid", 1, 128, "/payer")
    if kind == "h5":
        scene = _object(data, "scene_info")
        text_field(scene, "payer_client_ip", 1, 45, "/scene_info")
        text_field(_object(scene, "h5_info", "/scene_info"), "type", 1, 32, "/scene_info/h5_info")
    return OrderFields(
        appid=appid,
        mchid=mchid,
        description=description,
        out_trade_no=out_trade_no,
        notify_url=notify_url,
        total=total,
        attach=_optional_text(data, "attach", 128) or "",
        time_expire=time_expire,
        expire_at=expire_at,
        payer_openid=payer_openid,
    )


def _notify_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise param_error("/notify_url", "notify_url 必须是可直接访问的 http(s) 地址")
    return url


def _amount(amount: Mapping[str, Any]) -> int:
    total = amount.get("total")
    if type(total) is not int or not 0 < total <= MAX_TOTAL_FEN:
        raise param_error("/amount/total", "amount.total 必须是大于 0 的整数（单位：分）")
    currency = amount.get("currency", "CNY")
    if currency != "CNY":
        raise param_error("/amount/currency", "amount.currency 只支持 CNY")
    return total


def _time_expire(value: object, now: float) -> tuple[str | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, str) or "T" not in value:
        raise param_error("/time_expire", "time_expire 必须是 RFC3339 格式")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise param_error("/time_expire", "time_expire 必须是 RFC3339 格式") from exc
    if parsed.tzinfo is None:
        raise param_error("/time_expire", "time_expire 必须带时区")
    if parsed.timestamp() <= now:
        raise ApiError(400, "INVALID_REQUEST", "time_expire 早于当前时间")
    return value, parsed.timestamp()


def request_digest(kind: str, data: Mapping[str, Any]) -> str:
    canonical = json.dumps([kind, data], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def transaction_json(order: Order) -> dict[str, Any]:
    """The Transaction object of query responses and callbacks (订单详情)."""
    data: dict[str, Any] = {
        "appid": order.appid,
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_state": order.trade_state,
        "trade_state_desc": STATE_DESC[order.trade_state],
        "attach": order.attach,
        "amount": {"total": order.total, "currency": order.currency, "payer_currency": "CNY"},
        "promotion_detail": [],
    }
    if order.trade_state in (*PAID, "PAYERROR"):
        data["trade_type"] = order.trade_type
        data["payer"] = {"openid": order.payer_openid or ""}
    if order.trade_state in PAID and order.success_at is not None:
        data["transaction_id"] = order.transaction_id
        data["bank_type"] = order.bank_type or "OTHERS"
        data["success_time"] = beijing_time(order.success_at)
        data["amount"]["payer_total"] = order.total
    return data


def bill_params(params: Mapping[str, str]) -> tuple[date, str, bool]:
    text = params.get("bill_date", "")
    try:
        bill_date = date.fromisoformat(text) if _BILL_DATE.match(text) else None
    except ValueError:
        bill_date = None
    if bill_date is None:
        raise ApiError(400, "PARAM_ERROR", "bill_date 必须是 YYYY-MM-DD", {"location": "query"})
    if bill_date > datetime.now(BEIJING).date():
        raise ApiError(400, "INVALID_REQUEST", "账单日期不能晚于今天")
    bill_type = params.get("bill_type", "ALL")
    if bill_type not in ("ALL", "SUCCESS", "REFUND"):
        raise ApiError(400, "PARAM_ERROR", "bill_type 只能是 ALL、SUCCESS 或 REFUND")
    tar_type = params.get("tar_type")
    if tar_type not in (None, "GZIP"):
        raise ApiError(400, "PARAM_ERROR", "tar_type 只能是 GZIP")
    return bill_date, bill_type, tar_type == "GZIP"


def token_of_code_url(code_url: str) -> str:
    if not code_url.startswith(CODE_URL_PREFIX):
        raise ApiError(400, "PARAM_ERROR", "code_url 不是 weixin://wxpay/bizpayurl?pr=…")
    values = parse_qs(urlsplit(code_url).query).get("pr", [""])
    return values[0]
