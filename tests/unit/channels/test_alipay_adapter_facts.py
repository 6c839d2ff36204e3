"""AlipayAdapter's facts from forged, foreign and ill-typed notifies and answers: the adapter
never defaults a field, never acts on an unsigned error, and the payment core refuses another
app's or seller's trade. Notifies are signed here with the sandbox's Alipay key; answers come
from a scripted gateway (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid.channels import registry
from paygrid.channels.alipay import capabilities, signing
from paygrid.channels.alipay.adapter import AlipayAdapter
from paygrid.channels.alipay.client import AlipayConfig
from paygrid.channels.alipay.credentials import (
    SandboxCredentials,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.alipay.parsing import fen
from paygrid.channels.alipay.sandbox.settings import REFUND_WINDOW_SECONDS, SandboxSettings
from paygrid.channels.ports import (
    Callback,
    CallbackRefusal,
    CallbackRejected,
    ChannelError,
    Payer,
    RefundCallback,
    RefundState,
    Trade,
    TradeState,
)
from paygrid.kernel.money import Money
from paygrid.payments.domain import ChannelOutcome, PaymentStatus
from tests.unit.channels.test_alipay_adapter import refund
from tests.unit.test_channel_decision import NOW
from tests.unit.test_channel_decision import order as wechat_order
from tests.unit.test_channel_decision import payment as wechat_payment

GATEWAY = "http://gateway.test/gateway.do"
Answer = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> SandboxCredentials:
    return load_or_create_sandbox_credentials(Path(tmp_path_factory.mktemp("alipay-facts")))


def scripted(creds: SandboxCredentials, answer: Answer) -> AlipayAdapter:
    config = AlipayConfig.from_credentials(creds.merchant_view(), GATEWAY)
    return AlipayAdapter(config, httpx.Client(transport=httpx.MockTransport(answer)))


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no gateway in this test", request=request)


def alipay_key(creds: SandboxCredentials) -> rsa.RSAPrivateKey:
    return signing.load_private_key(creds.alipay_private_key)


def notify(creds: SandboxCredentials, key: rsa.RSAPrivateKey | None = None, **fields: str) -> bytes:
    """A payment notify of 12.34 for pay_1, signed as Alipay signs (by default)."""
    form = {
        "notify_time": "2026-11-28 10:00:05",
        "notify_type": "trade_status_sync",
        "notify_id": "ac05099524730693a8b330c5ecf72da9786",
        "app_id": creds.app_id,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": "2026112822001400000000000001",
        "out_trade_no": "pay_1",
        "seller_id": creds.seller_id,
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "12.34",
        "receipt_amount": "12.34",
        "subject": "苹果 & 梨",
        "gmt_create": "2026-11-28 10:00:00",
        "gmt_payment": "2026-11-28 10:00:04",
        **fields,
    }
    signed = signing.sign_notify(form, key or alipay_key(creds))
    return urlencode(signed).encode("ascii")


def parse(creds: SandboxCredentials, body: bytes) -> Trade:
    callback = scripted(creds, unreachable).parse_callback({}, body)
    assert isinstance(callback, Callback)
    return callback.trade


def refusal(creds: SandboxCredentials, body: bytes) -> CallbackRefusal:
    with pytest.raises(CallbackRejected) as refused:
        scripted(creds, unreachable).parse_callback({}, body)
    return refused.value.refusal


def test_a_genuine_notify_is_a_complete_fact(creds: SandboxCredentials) -> None:
    trade = parse(creds, notify(creds))
    assert trade == Trade(
        payment_ref="pay_1",
        state=TradeState.SUCCESS,
        channel_trade_no="2026112822001400000000000001",
        amount=Money(1234, "CNY"),
        paid_at=trade.paid_at,
        raw_state="TRADE_SUCCESS",
        merchant_id=creds.seller_id,
        app_id=creds.app_id,
    )
    assert trade.paid_at is not None and trade.paid_at.isoformat() == "2026-11-28T10:00:04+08:00"
    gbk = urlencode(
        signing.sign_notify(
            {"notify_type": "trade_status_sync", "notify_id": "n1", "charset": "gbk",
             "out_trade_no": "pay_1", "subject": "苹果", "trade_status": "TRADE_FINISHED"},
            alipay_key(creds),
        ),
        encoding="gbk",
    ).encode()  # fmt: skip
    assert parse(creds, gbk).state is TradeState.SUCCESS


def test_forged_notifies_are_bad_signatures(creds: SandboxCredentials) -> None:
    genuine = notify(creds)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unsigned = urlencode({"notify_type": "trade_status_sync", "notify_id": "n"}).encode()
    forged = [
        genuine.replace(b"total_amount=12.34", b"total_amount=0.01"),
        notify(creds, key=stranger),
        unsigned,
        genuine.replace(b"sign_type=RSA2", b"sign_type=RSA"),
        genuine + b"&total_amount=0.01",  # a second value: which one was signed?
        b"\xff\xfe",
        b"not a form",
        genuine.replace(b"charset=utf-8", b"charset=latin-1"),
        b"",
    ]
    for body in forged:
        assert refusal(creds, body) is CallbackRefusal.BAD_SIGNATURE, body[:60]
    other_type = notify(creds, notify_type="batch_trans_notify")
    assert refusal(creds, other_type) is CallbackRefusal.MALFORMED
    assert refusal(creds, notify(creds, notify_id="")) is CallbackRefusal.MALFORMED


def alipay_payment(status: PaymentStatus = PaymentStatus.PAYING) -> Any:
    """test_channel_decision's pay_1, of 12.34 CNY, its order at Alipay."""
    held = wechat_payment(status, amount=1234)
    return replace(held, orders=(replace(wechat_order(status), channel="alipay"),))


def decide(creds: SandboxCredentials, trade: Trade) -> ChannelOutcome:
    adapter = scripted(creds, unreachable)
    decision = alipay_payment().apply_channel_trade(trade, adapter.account, "alipay", NOW)
    return ChannelOutcome(decision.outcome)


def test_another_apps_or_sellers_notify_is_refused_by_the_core(creds: SandboxCredentials) -> None:
    assert decide(creds, parse(creds, notify(creds))) is ChannelOutcome.APPLY_SUCCESS
    for field, other in (("app_id", "2021999999999999"), ("seller_id", "2088999999999999")):
        trade = parse(creds, notify(creds, **{field: other}))
        assert getattr(trade, "app_id" if field == "app_id" else "merchant_id") == other
        assert decide(creds, trade) is ChannelOutcome.MERCHANT_MISMATCH
    foreign_refund = notify(creds, app_id="2021999999999999", out_biz_no="R1", refund_fee="1.00")
    callback = scripted(creds, unreachable).parse_callback({}, foreign_refund)
    assert isinstance(callback, RefundCallback)
    assert callback.refund.defect is not None and "2021999999999999" in callback.refund.defect


def test_closed_after_payment_is_success_and_closed_unpaid_is_closed(
    creds: SandboxCredentials,
) -> None:
    refunded = parse(creds, notify(creds, trade_status="TRADE_CLOSED"))
    assert (refunded.state, refunded.amount) == (TradeState.SUCCESS, Money(1234, "CNY"))
    assert decide(creds, refunded) is ChannelOutcome.APPLY_SUCCESS
    body = notify(creds, trade_status="TRADE_CLOSED", gmt_payment="")
    unpaid = parse(creds, body)
    assert (unpaid.state, unpaid.paid_at) == (TradeState.CLOSED, None)
    assert decide(creds, unpaid) is ChannelOutcome.APPLY_CLOSED


@pytest.mark.parametrize(
    "text, expected",
    [("12.34", 1234), ("0.01", 1), ("12", 1200), ("12.3", 1230), ("0", 0),
     ("100000000.00", 10_000_000_000), ("12.345", None), ("-1.00", None), ("1e2", None),
     (" 1.00", None), ("1.00 ", None), ("１.00", None), ("", None), ("01.00", None),
     (".5", None), ("5.", None), ("NaN", None), ("0x10", None), ("1,000.00", None),
     (12.34, None), (1234, None), (None, None), (True, None)],
)  # fmt: skip
def test_yuan_is_parsed_exactly_or_not_at_all(
    creds: SandboxCredentials, text: object, expected: int | None
) -> None:
    assert fen(text) == expected
    if isinstance(text, str):
        trade = parse(creds, notify(creds, total_amount=text))
        assert trade.amount == (Money(expected, "CNY") if expected is not None else None)


def test_fields_left_out_are_none_not_defaults(creds: SandboxCredentials) -> None:
    bare = {"notify_type": "trade_status_sync", "notify_id": "n1", "trade_status": "WHAT"}
    trade = parse(creds, urlencode(signing.sign_notify(bare, alipay_key(creds))).encode())
    assert trade == Trade(payment_ref=None, state=None, raw_state="WHAT")
    assert decide(creds, trade) is ChannelOutcome.MISSING_FIELD


# --- scripted gateway answers -----------------------------------------------------------------


def answer(creds: SandboxCredentials, node: Mapping[str, object], signed: bool = True) -> Answer:
    def reply(request: httpx.Request) -> httpx.Response:
        method = dict(httpx.QueryParams(request.content.decode()))["method"]
        text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        name = signing.response_node_name(method)
        body = (
            signing.signed_response(name, text, alipay_key(creds))
            if signed
            else f'{{"{name}":{text}}}'
        )
        return httpx.Response(200, content=body.encode())

    return reply


NOT_EXIST = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"}


def test_an_unsigned_error_is_never_acted_on(creds: SandboxCredentials) -> None:
    adapter = scripted(creds, answer(creds, NOT_EXIST, signed=False))
    for call in (lambda: adapter.query("pay_1"), lambda: adapter.close("pay_1"),
                 lambda: adapter.query_refund("R1", "pay_1")):  # fmt: skip
        with pytest.raises(ChannelError) as caught:
            call()
        assert (caught.value.code, caught.value.retryable) == ("ACQ.TRADE_NOT_EXIST", True)
    signed = scripted(creds, answer(creds, NOT_EXIST))
    assert signed.query("pay_1").state is TradeState.NOT_FOUND


@pytest.mark.parametrize(
    "node, expected",
    [({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"},
      ("isp.unknow-error", True)),
     ({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.SYSTEM_ERROR"},
      ("ACQ.SYSTEM_ERROR", True)),
     ({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.SELLER_BALANCE_NOT_ENOUGH"},
      ("ACQ.SELLER_BALANCE_NOT_ENOUGH", True)),
     ({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_HAS_FINISHED"},
      ("ACQ.TRADE_HAS_FINISHED", False))],
)  # fmt: skip
def test_refund_errors(
    creds: SandboxCredentials, node: dict[str, str], expected: tuple[str, bool]
) -> None:
    with pytest.raises(ChannelError) as caught:
        scripted(creds, answer(creds, node)).refund(refund("pay_1", "R1", 100))
    assert (caught.value.code, caught.value.retryable) == expected


def test_an_accepted_refund_the_query_cannot_confirm_is_processing(
    creds: SandboxCredentials,
) -> None:
    accepted = {"code": "10000", "msg": "Success", "out_trade_no": "pay_1", "fund_change": "N"}
    calls: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        calls.append(dict(httpx.QueryParams(request.content.decode()))["method"])
        if len(calls) == 1:
            return answer(creds, accepted)(request)
        raise httpx.ReadTimeout("slow", request=request)

    fact = scripted(creds, gateway).refund(refund("pay_1", "R1", 100))
    assert (fact.state, fact.refund_ref, fact.amount) == (RefundState.PROCESSING, "R1", None)
    assert calls == ["alipay.trade.refund", "alipay.trade.fastpay.refund.query"]
    listed = {"code": "10000", "msg": "Success", "out_request_no": "R1", "refund_status": "HELD"}
    odd = scripted(creds, answer(creds, listed)).query_refund("R1", "pay_1")
    assert (odd.state, odd.raw_state, odd.amount) == (None, "HELD", None)


def test_query_answers_with_ill_typed_fields(creds: SandboxCredentials) -> None:
    node = {"code": "10000", "msg": "Success", "out_trade_no": "pay_1",
            "trade_status": "TRADE_SUCCESS", "total_amount": 12.34,
            "send_pay_date": "yesterday"}  # fmt: skip
    trade = scripted(creds, answer(creds, node)).query("pay_1")
    assert (trade.state, trade.amount, trade.paid_at) == (TradeState.SUCCESS, None, None)
    assert decide(creds, trade) is ChannelOutcome.MISSING_FIELD
    usd = {**node, "total_amount": "12.34", "trans_currency": "USD"}
    assert scripted(creds, answer(creds, usd)).query("pay_1").amount is None


def test_network_trouble_is_retryable(creds: SandboxCredentials) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for gateway, code in ((unreachable, "NETWORK_ERROR"), (slow, "TIMEOUT")):
        with pytest.raises(ChannelError) as caught:
            scripted(creds, gateway).query("pay_1")
        assert (caught.value.code, caught.value.retryable) == (code, True)


def test_a_refund_notify_the_query_does_not_confirm_is_retried(creds: SandboxCredentials) -> None:
    body = notify(creds, out_biz_no="R1", refund_fee="1.00", gmt_refund="2026-11-28 10:05:00.120")
    nothing = {"code": "10000", "msg": "Success", "out_trade_no": "pay_1", "out_request_no": "R1"}
    for gateway in (unreachable, answer(creds, nothing)):
        with pytest.raises(CallbackRejected) as refused:
            scripted(creds, gateway).parse_callback({}, body)
        assert refused.value.refusal is CallbackRefusal.RETRY_LATER


def test_callback_replies(creds: SandboxCredentials) -> None:
    adapter = scripted(creds, unreachable)
    ack = adapter.callback_ack()
    assert (ack.status, ack.body, ack.headers["Content-Type"]) == (
        200,
        b"success",
        "text/plain; charset=utf-8",
    )
    statuses = {r: adapter.callback_nack("secret detail", r).status for r in CallbackRefusal}
    assert statuses == {
        CallbackRefusal.BAD_SIGNATURE: 401,
        CallbackRefusal.UNDECRYPTABLE: 400,
        CallbackRefusal.MALFORMED: 400,
        CallbackRefusal.UNKNOWN_PAYMENT: 404,
        CallbackRefusal.RETRY_LATER: 503,
    }
    assert {adapter.callback_nack("secret detail", r).body for r in CallbackRefusal} == {b"fail"}


def test_capabilities_match_the_sandbox_and_the_registry() -> None:
    spec = registry.spec("alipay")
    assert spec.capabilities == capabilities.CAPABILITIES
    assert spec.fee_rate_ppm == capabilities.FEE_RATE_PPM == SandboxSettings().fee_rate_ppm
    assert timedelta(seconds=REFUND_WINDOW_SECONDS) == capabilities.REFUND_WINDOW
    assert spec.capabilities.cashier_methods == ("native", "page")
    assert spec.capabilities.missing_payer_fields("h5", Payer()) == []  # nothing of the payer
