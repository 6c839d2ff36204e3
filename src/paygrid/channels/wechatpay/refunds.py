"""WeChat Pay refunds (退款) on the wire, for paygrid's adapter: the request body, the Refund
answer, the refund notification (退款结果通知) and what WeChat's refund error codes mean.

- ``POST /v3/refund/domestic/refunds`` with :func:`refund_request_body`; the answer and
  ``GET /v3/refund/domestic/refunds/{out_refund_no}`` (:func:`refund_query_path`) parse with
  :func:`refund_from_answer`.
- A refund notification is signed like a payment callback (verify it first, as the adapter does),
  its resource sealed with AEAD_AES_256_GCM under the APIv3 key with associated data ``refund``;
  :func:`open_refund_notification` opens it, :func:`refund_from_notification` reads the resource.
- Statuses: PROCESSING (accepted, money on its way), SUCCESS (退款成功), ABNORMAL (退款异常: the
  money left the merchant but could not reach the payer, e.g. a closed bank card; the merchant
  settles it by hand in the merchant platform, it will not end by itself), CLOSED (退款关闭: no
  money moved; the amount is refundable again).
- A field WeChat left out or sent ill-typed is None in :class:`RefundResult`, never defaulted:
  the caller refuses to act on what it cannot check.

Domain-level: standard library, the signing helpers and the channel port's callback errors.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from paygrid.channels.ports import CallbackRefusal, CallbackRejected, ChannelError
from paygrid.channels.wechatpay import signing

REFUNDS_PATH = "/v3/refund/domestic/refunds"
REFUND_RESOURCE = "refund"  # associated_data and original_type of a refund notification's resource
REFUND_EVENT_PREFIX = "REFUND."
MAX_REASON_CHARS = 80  # 退款原因 string(80)
MAX_OUT_REFUND_NO_CHARS = 64  # 商户退款单号 string(64)
MAX_NOTIFY_ID_CHARS = 128
MAX_RAW_STATUS_CHARS = 32


class RefundStatus(enum.Enum):
    """A WeChat refund's ``status`` / ``refund_status`` (退款状态)."""

    PROCESSING = "PROCESSING"  # 退款处理中
    SUCCESS = "SUCCESS"  # 退款成功
    ABNORMAL = "ABNORMAL"  # 退款异常
    CLOSED = "CLOSED"  # 退款关闭


@dataclass(frozen=True, slots=True)
class RefundResult:
    """What WeChat says of one refund (退款单), from an answer, a query or a notification.
    Amounts are integers of fen; every field is None when absent or ill-typed."""

    refund_ref: str | None  # out_refund_no, paygrid's refund reference
    channel_refund_id: str | None  # refund_id, 微信支付退款单号
    status: RefundStatus | None
    refund: int | None  # amount.refund
    total: int | None  # amount.total, the payment's total
    currency: str | None  # amount.currency (a notification carries none: None)
    succeeded_at: datetime | None  # success_time, timezone-aware
    payment_ref: str | None  # out_trade_no
    channel_trade_no: str | None  # transaction_id
    raw_status: str = ""  # the status as sent, at most 32 characters
    fee_refund: int | None = None  # amount.refund_fee, 手续费退款金额 (answers only)
    merchant_id: str | None = None  # mchid (notifications only)


@dataclass(frozen=True, slots=True)
class RefundNotification:
    """A refund notification, opened: the channel's notify id, its event and the refund."""

    notify_id: str
    event_type: str  # REFUND.SUCCESS | REFUND.ABNORMAL | REFUND.CLOSED
    refund: RefundResult


@dataclass(frozen=True, slots=True)
class RefundErrorMeaning:
    """How to treat a WeChat error answer to a refund call."""

    retryable: bool  # the same call, same out_refund_no, may succeed later
    meaning: str


# The documented error codes of 申请退款 / 查询单笔退款 (状态码 in the comment).
REFUND_ERRORS: Mapping[str, RefundErrorMeaning] = {
    "SYSTEM_ERROR": RefundErrorMeaning(True, "500: retry with the same out_refund_no"),
    "FREQUENCY_LIMITED": RefundErrorMeaning(True, "429: not accepted; retry more slowly"),
    "NOT_ENOUGH": RefundErrorMeaning(True, "403: merchant balance too low; retry once funded"),
    "RESOURCE_NOT_EXISTS": RefundErrorMeaning(False, "404: no such paid order (or refund)"),
    "PARAM_ERROR": RefundErrorMeaning(False, "400: a parameter is wrong"),
    "INVALID_REQUEST": RefundErrorMeaning(False, "400: against the rules (e.g. above remaining)"),
    "MCH_NOT_EXISTS": RefundErrorMeaning(False, "400: unknown merchant"),
    "SIGN_ERROR": RefundErrorMeaning(False, "401: our signature was refused"),
    "NO_AUTH": RefundErrorMeaning(False, "403: no refund permission for this order"),
    "USER_ACCOUNT_ABNORMAL": RefundErrorMeaning(False, "403: payer account closed; refund by hand"),
    "REQUEST_BLOCKED": RefundErrorMeaning(False, "403: blocked; see the message"),
}


def refund_error_retryable(code: str, http_status: int | None = None) -> bool:
    """Whether a refund call that WeChat answered with ``code`` may be made again, unchanged and
    with the same out_refund_no. Unknown codes: retryable on 5xx and 429 only."""
    known = REFUND_ERRORS.get(code)
    if known is not None:
        return known.retryable
    return http_status is not None and (http_status >= 500 or http_status == 429)


def refund_request_body(
    payment_ref: str,
    refund_ref: str,
    amount: int,
    total: int,
    currency: str,
    reason: str | None = None,
    notify_url: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v3/refund/domestic/refunds`` for a refund of ``amount`` fen of the
    payment ``payment_ref`` (its out_trade_no) whose total is ``total`` fen; ``reason`` is cut
    to 80 characters. A body WeChat would refuse raises a final ``ChannelError`` PARAM_ERROR."""
    if type(amount) is not int or type(total) is not int or not 0 < amount <= total:
        raise ChannelError("PARAM_ERROR", "refund must be integer fen, 0 < amount <= total")
    if not 0 < len(refund_ref) <= MAX_OUT_REFUND_NO_CHARS:
        raise ChannelError(
            "PARAM_ERROR", f"out_refund_no must be 1-{MAX_OUT_REFUND_NO_CHARS} chars"
        )
    if currency != "CNY":
        raise ChannelError("PARAM_ERROR", "WeChat Pay refunds are in CNY only")
    body: dict[str, Any] = {
        "out_trade_no": payment_ref,
        "out_refund_no": refund_ref,
        "amount": {"refund": amount, "total": total, "currency": currency},
    }
    if reason:
        body["reason"] = reason[:MAX_REASON_CHARS]
    if notify_url:
        body["notify_url"] = notify_url
    return body


def refund_query_path(refund_ref: str) -> str:
    """``GET`` path of 查询单笔退款 for an out_refund_no (a direct merchant adds no query)."""
    return f"{REFUNDS_PATH}/{quote(refund_ref, safe='')}"


def refund_from_answer(data: Mapping[str, Any]) -> RefundResult:
    """The Refund object of a create or query answer (``status``)."""
    amount = data.get("amount")
    amounts = amount if isinstance(amount, dict) else {}
    return _result(data, data.get("status"), amounts, _int(amounts, "refund_fee"), None)


def refund_from_notification(resource: Mapping[str, Any]) -> RefundResult:
    """The decrypted resource of a refund notification (``refund_status``, ``mchid``)."""
    amount = resource.get("amount")
    amounts = amount if isinstance(amount, dict) else {}
    merchant = _str(resource, "mchid")
    return _result(resource, resource.get("refund_status"), amounts, None, merchant)


def _result(
    data: Mapping[str, Any],
    raw_status: object,
    amounts: Mapping[str, Any],
    fee_refund: int | None,
    merchant_id: str | None,
) -> RefundResult:
    raw = raw_status if isinstance(raw_status, str) else ""
    return RefundResult(
        refund_ref=_str(data, "out_refund_no"),
        channel_refund_id=_str(data, "refund_id"),
        status=_status(raw),
        refund=_int(amounts, "refund"),
        total=_int(amounts, "total"),
        currency=_str(amounts, "currency"),
        succeeded_at=_time(_str(data, "success_time")),
        payment_ref=_str(data, "out_trade_no"),
        channel_trade_no=_str(data, "transaction_id"),
        raw_status=raw[:MAX_RAW_STATUS_CHARS],
        fee_refund=fee_refund,
        merchant_id=merchant_id,
    )


def is_refund_notification(body: bytes) -> bool:
    """Whether a (verified) notification body is a refund's: its event_type is ``REFUND.*``."""
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return False
    event_type = envelope.get("event_type") if isinstance(envelope, dict) else None
    return isinstance(event_type, str) and event_type.startswith(REFUND_EVENT_PREFIX)


def open_refund_notification(body: bytes, apiv3_key: str) -> RefundNotification:
    """Open a refund notification whose signature the caller has verified.

    Raises :class:`CallbackRejected`: UNDECRYPTABLE when the resource does not open under the
    APIv3 key, MALFORMED when it is not a refund notification we can read (envelope, event,
    algorithm, sealed for something other than a refund, resource not a JSON object)."""
    try:
        notify_id, event_type, resource = _envelope(json.loads(body))
        plain = signing.aead_decrypt(
            apiv3_key, resource["nonce"], resource["ciphertext"], resource["associated_data"]
        )
    except signing.DecryptError as exc:
        raise CallbackRejected(str(exc), CallbackRefusal.UNDECRYPTABLE) from exc
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CallbackRejected(f"malformed refund notification: {exc}", _MALFORMED) from exc
    try:
        data = json.loads(plain)
    except (ValueError, RecursionError) as exc:
        raise CallbackRejected("resource is not JSON", _MALFORMED) from exc
    if not isinstance(data, dict):
        raise CallbackRejected("resource is not an object", _MALFORMED)
    return RefundNotification(notify_id, event_type, refund_from_notification(data))


_MALFORMED = CallbackRefusal.MALFORMED


def _envelope(envelope: object) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(envelope, dict):
        raise ValueError("envelope is not an object")
    notify_id = envelope.get("id")
    if not isinstance(notify_id, str) or not 0 < len(notify_id) <= MAX_NOTIFY_ID_CHARS:
        raise ValueError("notification without a usable id")
    event_type = envelope.get("event_type")
    if not isinstance(event_type, str) or not event_type.startswith(REFUND_EVENT_PREFIX):
        raise ValueError(f"not a refund event: {event_type!r}")
    resource = envelope.get("resource")
    if envelope.get("resource_type") != "encrypt-resource" or not isinstance(resource, dict):
        raise ValueError("resource is not an encrypt-resource")
    if resource.get("algorithm") != signing.AEAD_ALGORITHM:
        raise ValueError(f"unsupported algorithm {resource.get('algorithm')!r}")
    for name in ("nonce", "ciphertext", "associated_data"):
        if not isinstance(resource.get(name), str):
            raise ValueError(f"resource.{name} is not a string")
    sealed_for = (resource["associated_data"], resource.get("original_type"))
    if sealed_for != (REFUND_RESOURCE, REFUND_RESOURCE):
        raise ValueError(
            "resource sealed as associated_data={!r}, original_type={!r}".format(*sealed_for)
        )
    return notify_id, event_type[:MAX_RAW_STATUS_CHARS], resource


def _status(raw: str) -> RefundStatus | None:
    try:
        return RefundStatus(raw)
    except ValueError:
        return None


def _str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if type(value) is int and value >= 0 else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
