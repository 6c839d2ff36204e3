"""The WeChat Pay refund API on the wire, as the sandbox enforces and answers it (退款申请,
查询单笔退款, 退款结果通知): request validation, the Refund object and the refund notification's
resource.

Field names and errors follow the documented API (``POST /v3/refund/domestic/refunds``); amounts
are integers of fen.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from paygrid.channels.wechatpay.bill import BEIJING
from paygrid.channels.wechatpay.sandbox.protocol import (
    MAX_TOTAL_FEN,
    ApiError,
    beijing_time,
    param_error,
    text_field,
)
from paygrid.channels.wechatpay.sandbox.store import Order, Refund

MAX_GOODS_DETAIL = 100  # goods_detail entries per refund request
USER_RECEIVED_ACCOUNT = "支付用户零钱"  # where a 零钱 (OTHERS) payment's refund lands
REFUND_EVENTS = {
    "SUCCESS": ("REFUND.SUCCESS", "退款成功"),
    "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
    "CLOSED": ("REFUND.CLOSED", "退款关闭"),
}
_OUT_REFUND_NO = re.compile(r"^[A-Za-z0-9_\-|*@]{1,64}$")
_GOODS_INTS = ("unit_price", "refund_amount", "refund_quantity")


@dataclass(frozen=True, slots=True)
class RefundFields:
    """A validated refund request (退款申请)."""

    transaction_id: str | None
    out_trade_no: str | None
    out_refund_no: str
    reason: str | None
    notify_url: str | None
    funds_account: str
    goods_detail: str | None  # as JSON
    refund: int
    total: int
    currency: str


def validate_refund(data: Mapping[str, Any]) -> RefundFields:
    transaction_id = _optional(data, "transaction_id", 32)
    out_trade_no = _optional(data, "out_trade_no", 32)
    if transaction_id is None and out_trade_no is None:
        raise param_error("/transaction_id", "transaction_id 和 out_trade_no 必须二选一")
    out_refund_no = text_field(data, "out_refund_no", 1, 64)
    if not _OUT_REFUND_NO.match(out_refund_no):
        raise param_error("/out_refund_no", "out_refund_no 只能是数字、大小写字母和 _-|*@")
    notify_url = _optional(data, "notify_url", 256)
    if notify_url is not None and not _is_web_url(notify_url):
        raise param_error("/notify_url", "notify_url 必须是可直接访问的 http(s) 地址")
    funds_account = _optional(data, "funds_account", 32)
    if funds_account not in (None, "AVAILABLE"):
        raise param_error("/funds_account", "funds_account 只能是 AVAILABLE")
    refund, total, currency = _refund_amount(data.get("amount"))
    return RefundFields(
        transaction_id=transaction_id,
        out_trade_no=out_trade_no,
        out_refund_no=out_refund_no,
        reason=_optional(data, "reason", 80),
        notify_url=notify_url,
        funds_account=funds_account or "UNSETTLED",
        goods_detail=_goods_detail(data.get("goods_detail")),
        refund=refund,
        total=total,
        currency=currency,
    )


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _optional(data: Mapping[str, Any], name: str, high: int) -> str | None:
    if data.get(name) is None:
        return None
    return text_field(data, name, 1, high)


def _refund_amount(amount: object) -> tuple[int, int, str]:
    if not isinstance(amount, dict):
        raise param_error("/amount", "缺少参数 /amount")
    refund, total = amount.get("refund"), amount.get("total")
    if type(refund) is not int or not 0 < refund <= MAX_TOTAL_FEN:
        raise param_error("/amount/refund", "amount.refund 必须是大于 0 的整数（单位：分）")
    if type(total) is not int or not 0 < total <= MAX_TOTAL_FEN:
        raise param_error("/amount/total", "amount.total 必须是大于 0 的整数（单位：分）")
    currency = amount.get("currency")
    if currency is None:
        raise param_error("/amount/currency", "缺少参数 /amount/currency")
    if currency != "CNY":
        raise param_error("/amount/currency", "amount.currency 只支持 CNY")
    if refund > total:
        raise param_error("/amount/refund", "退款金额不能大于订单金额")
    return refund, total, currency


def _goods_detail(goods: object) -> str | None:
    if goods is None:
        return None
    if not isinstance(goods, list) or not 0 < len(goods) <= MAX_GOODS_DETAIL:
        raise param_error("/goods_detail", f"goods_detail 必须是 1-{MAX_GOODS_DETAIL} 项的数组")
    for index, item in enumerate(goods):
        where = f"/goods_detail/{index}"
        if not isinstance(item, dict):
            raise param_error(where, f"{where} 必须是对象")
        text_field(item, "merchant_goods_id", 1, 32, where)
        for name in _GOODS_INTS:
            value = item.get(name)
            if type(value) is not int or not 0 <= value <= MAX_TOTAL_FEN:
                raise param_error(f"{where}/{name}", f"{where}/{name} 必须是非负整数")
    return json.dumps(goods, ensure_ascii=False, separators=(",", ":"))


def new_refund_id(now: float) -> str:
    """29 digits like a real 微信支付退款单号: 503 prefix, random, date, random."""
    day = datetime.fromtimestamp(now, BEIJING).strftime("%Y%m%d")
    return f"503{secrets.randbelow(10**7):07d}{day}{secrets.randbelow(10**11):011d}"


def same_request(refund: Refund, order: Order, fields: RefundFields) -> bool:
    """A repeated out_refund_no must name the same trade and amounts (同一退款单号多次请求只退
    一笔)."""
    return (refund.out_trade_no, refund.refund, refund.total) == (
        order.out_trade_no,
        fields.refund,
        fields.total,
    )


def refund_mismatch() -> ApiError:
    return ApiError(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")


def refund_json(refund: Refund, order: Order) -> dict[str, Any]:
    """The Refund object of the create and query answers (退款单)."""
    data: dict[str, Any] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": USER_RECEIVED_ACCOUNT,
        "create_time": beijing_time(refund.created_at),
        "status": refund.status,
        "funds_account": refund.funds_account,
        "amount": {
            "total": refund.total,
            "refund": refund.refund,
            "from": [],
            "payer_total": order.total,
            "payer_refund": refund.refund,
            "settlement_refund": refund.refund,
            "settlement_total": order.total,
            "discount_refund": 0,
            "currency": refund.currency,
            "refund_fee": refund.fee_refund,
        },
        "promotion_detail": [],
    }
    if refund.success_at is not None:
        data["success_time"] = beijing_time(refund.success_at)
    return data


def refund_resource_json(refund: Refund, order: Order) -> dict[str, Any]:
    """The decrypted resource of a refund notification (退款结果通知)."""
    data: dict[str, Any] = {
        "mchid": refund.mchid,
        "out_trade_no": refund.out_trade_no,
        "transaction_id": refund.transaction_id,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_status": refund.status,
        "user_received_account": USER_RECEIVED_ACCOUNT,
        "amount": {
            "total": refund.total,
            "refund": refund.refund,
            "payer_total": order.total,
            "payer_refund": refund.refund,
        },
    }
    if refund.success_at is not None:
        data["success_time"] = beijing_time(refund.success_at)
    return data
