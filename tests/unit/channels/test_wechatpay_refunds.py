"""WeChat Pay refunds on the wire (paygrid.channels.wechatpay.refunds): request body, answers,
notifications and error codes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from paygrid.channels.ports import CallbackRefusal, CallbackRejected, ChannelError
from paygrid.channels.wechatpay.refunds import (
    REFUND_ERRORS,
    RefundStatus,
    is_refund_notification,
    open_refund_notification,
    refund_error_retryable,
    refund_from_answer,
    refund_from_notification,
    refund_query_path,
    refund_request_body,
)
from paygrid.channels.wechatpay.signing import aead_encrypt

APIV3_KEY = "0123456789abcdef0123456789abcdef"
CHINA = timezone(timedelta(hours=8))

ANSWER: dict[str, Any] = {
    "refund_id": "50000000382019052709732678859",
    "out_refund_no": "RF1217752501201407033233368018",
    "transaction_id": "4200000001202603011234567890",
    "out_trade_no": "PG1217752501201407033233368018",
    "channel": "ORIGINAL",
    "user_received_account": "支付用户零钱",
    "success_time": "2026-03-01T16:18:12+08:00",
    "create_time": "2026-03-01T16:18:10+08:00",
    "status": "SUCCESS",
    "funds_account": "UNSETTLED",
    "amount": {
        "total": 100,
        "refund": 40,
        "from": [],
        "payer_total": 100,
        "payer_refund": 40,
        "settlement_refund": 40,
        "settlement_total": 100,
        "discount_refund": 0,
        "currency": "CNY",
        "refund_fee": 1,
    },
    "promotion_detail": [],
}
RESOURCE: dict[str, Any] = {
    "mchid": "1900000100",
    "out_trade_no": ANSWER["out_trade_no"],
    "transaction_id": ANSWER["transaction_id"],
    "out_refund_no": ANSWER["out_refund_no"],
    "refund_id": ANSWER["refund_id"],
    "refund_status": "ABNORMAL",
    "user_received_account": "招商银行信用卡0403",
    "amount": {"total": 100, "refund": 40, "payer_total": 100, "payer_refund": 40},
}


def test_request_body_is_the_documented_one() -> None:
    body = refund_request_body(
        "PG0001", "RF0001", 40, 100, "CNY", "商品已售完" * 20, "https://m.example/notify"
    )
    assert body == {
        "out_trade_no": "PG0001",
        "out_refund_no": "RF0001",
        "amount": {"refund": 40, "total": 100, "currency": "CNY"},
        "reason": ("商品已售完" * 20)[:80],
        "notify_url": "https://m.example/notify",
    }
    assert refund_request_body("PG0001", "RF0001", 100, 100, "CNY") == {
        "out_trade_no": "PG0001",
        "out_refund_no": "RF0001",
        "amount": {"refund": 100, "total": 100, "currency": "CNY"},
    }


@pytest.mark.parametrize(
    ("amount", "total", "currency", "refund_ref"),
    [
        (0, 100, "CNY", "RF1"),
        (101, 100, "CNY", "RF1"),
        (1.0, 100, "CNY", "RF1"),
        (True, 100, "CNY", "RF1"),
        (1, 100, "USD", "RF1"),
        (1, 100, "CNY", ""),
        (1, 100, "CNY", "R" * 65),
    ],
)
def test_request_body_refuses_what_wechat_would(
    amount: Any, total: int, currency: str, refund_ref: str
) -> None:
    with pytest.raises(ChannelError) as info:
        refund_request_body("PG0001", refund_ref, amount, total, currency)
    assert (info.value.code, info.value.retryable) == ("PARAM_ERROR", False)


def test_query_path_escapes_the_refund_number() -> None:
    assert refund_query_path("RF|1@x") == "/v3/refund/domestic/refunds/RF%7C1%40x"
    assert refund_query_path("RF-001_a") == "/v3/refund/domestic/refunds/RF-001_a"


def test_answer_parses_exactly() -> None:
    result = refund_from_answer(ANSWER)
    assert result.refund_ref == ANSWER["out_refund_no"]
    assert result.channel_refund_id == ANSWER["refund_id"]
    assert result.status is RefundStatus.SUCCESS and result.raw_status == "SUCCESS"
    assert (result.refund, result.total, result.currency) == (40, 100, "CNY")
    assert result.succeeded_at == datetime(2026, 3, 1, 16, 18, 12, tzinfo=CHINA)
    assert (result.payment_ref, result.channel_trade_no) == (
        ANSWER["out_trade_no"],
        ANSWER["transaction_id"],
    )
    assert (result.fee_refund, result.merchant_id) == (1, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "REFUNDED"}, "status"),
        ({"status": 1}, "status"),
        ({"amount": {"refund": "40", "total": 100}}, "refund"),
        ({"amount": {"refund": 40.0, "total": 100}}, "refund"),
        ({"amount": {"refund": True, "total": 100}}, "refund"),
        ({"amount": {"refund": -1, "total": 100}}, "refund"),
        ({"amount": {"refund": 40, "total": None}}, "total"),
        ({"amount": "40"}, "refund"),
        ({"amount": {"refund": 40, "total": 100}}, "currency"),
        ({"success_time": "2026-03-01T16:18:12"}, "succeeded_at"),
        ({"success_time": "yesterday"}, "succeeded_at"),
        ({"out_refund_no": ""}, "refund_ref"),
        ({"out_trade_no": 7}, "payment_ref"),
        ({"refund_id": None}, "channel_refund_id"),
    ],
)
def test_missing_or_ill_typed_fields_are_none(change: dict[str, Any], field: str) -> None:
    result = refund_from_answer({**ANSWER, **change})
    assert getattr(result, field) is None


def test_raw_status_is_bounded() -> None:
    assert refund_from_answer({**ANSWER, "status": "X" * 500}).raw_status == "X" * 32
    assert refund_from_answer({}).raw_status == ""


def test_notification_resource_parses_exactly() -> None:
    result = refund_from_notification(RESOURCE)
    assert result.status is RefundStatus.ABNORMAL
    assert (result.refund, result.total, result.currency) == (40, 100, None)
    assert (result.merchant_id, result.succeeded_at, result.fee_refund) == (
        "1900000100",
        None,
        None,
    )
    assert result.refund_ref == RESOURCE["out_refund_no"]


def notification(
    resource: object = RESOURCE,
    *,
    event_type: str = "REFUND.ABNORMAL",
    sealed_for: str = "refund",
    original_type: str = "refund",
    key: str = APIV3_KEY,
    **envelope: Any,
) -> bytes:
    plaintext = resource if isinstance(resource, str) else json.dumps(resource, ensure_ascii=False)
    sealed = aead_encrypt(key, plaintext, sealed_for)
    body = {
        "id": "EV-018a1b2c-3d4e",
        "create_time": "2026-03-01T16:18:12+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "退款异常",
        "resource": {**sealed, "original_type": original_type},
        **envelope,
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def test_notification_opens() -> None:
    opened = open_refund_notification(notification(), APIV3_KEY)
    assert (opened.notify_id, opened.event_type) == ("EV-018a1b2c-3d4e", "REFUND.ABNORMAL")
    assert opened.refund == refund_from_notification(RESOURCE)
    assert is_refund_notification(notification())


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        (notification(key="f" * 32), CallbackRefusal.UNDECRYPTABLE),
        (notification(event_type="TRANSACTION.SUCCESS"), CallbackRefusal.MALFORMED),
        (
            notification(sealed_for="transaction", original_type="transaction"),
            CallbackRefusal.MALFORMED,
        ),
        (notification(original_type="transaction"), CallbackRefusal.MALFORMED),
        (notification("[1, 2]"), CallbackRefusal.MALFORMED),
        (notification("not json"), CallbackRefusal.MALFORMED),
        (notification(id=""), CallbackRefusal.MALFORMED),
        (notification(id="x" * 129), CallbackRefusal.MALFORMED),
        (notification(resource_type="plain"), CallbackRefusal.MALFORMED),
        (b"[]", CallbackRefusal.MALFORMED),
        (b"{", CallbackRefusal.MALFORMED),
    ],
)
def test_notification_refusals(body: bytes, refusal: CallbackRefusal) -> None:
    with pytest.raises(CallbackRejected) as info:
        open_refund_notification(body, APIV3_KEY)
    assert info.value.refusal is refusal


def test_a_tampered_ciphertext_does_not_open() -> None:
    envelope = json.loads(notification())
    ciphertext = envelope["resource"]["ciphertext"]
    envelope["resource"]["ciphertext"] = ("A" if ciphertext[0] != "A" else "B") + ciphertext[1:]
    with pytest.raises(CallbackRejected) as info:
        open_refund_notification(json.dumps(envelope).encode(), APIV3_KEY)
    assert info.value.refusal is CallbackRefusal.UNDECRYPTABLE


def test_only_refund_events_are_refund_notifications() -> None:
    assert not is_refund_notification(notification(event_type="TRANSACTION.SUCCESS"))
    assert not is_refund_notification(b"{")
    assert not is_refund_notification(b'["REFUND.SUCCESS"]')


def test_error_codes() -> None:
    assert refund_error_retryable("SYSTEM_ERROR", 500)
    assert refund_error_retryable("FREQUENCY_LIMITED", 429)
    assert refund_error_retryable("NOT_ENOUGH", 403)
    for final in ("INVALID_REQUEST", "PARAM_ERROR", "RESOURCE_NOT_EXISTS", "NO_AUTH"):
        assert not refund_error_retryable(final, 400)
    assert not refund_error_retryable("USER_ACCOUNT_ABNORMAL", 403)
    assert refund_error_retryable("SOMETHING_NEW", 503)
    assert refund_error_retryable("SOMETHING_NEW", 429)
    assert not refund_error_retryable("SOMETHING_NEW", 400)
    assert not refund_error_retryable("SOMETHING_NEW")
    assert len(REFUND_ERRORS) == 11
