"""AlipayClient against an in-process gateway stand-in (httpx.MockTransport): what it signs and
sends, and how it treats signed, unsigned, tampered and failed answers. The real sandbox process
is driven in tests/integration/test_alipay_sandbox.py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import date, datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.bill import BEIJING
from paygrid.channels.alipay.client import (
    WAP_PAY,
    AlipayApiError,
    AlipayClient,
    AlipayConfig,
    parse_beijing_time,
    to_fen,
    to_yuan,
)
from paygrid.channels.ports import ChannelError
from paygrid.kernel.money import MoneyError

APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ALIPAY_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
GATEWAY = "http://gateway.test/gateway.do"
CONFIG = AlipayConfig(
    app_id="2021000000000001",
    app_private_key=signing.private_pem(APP_KEY),
    alipay_public_key=signing.public_pem(ALIPAY_KEY.public_key()),
    gateway_url=GATEWAY,
)
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> AlipayClient:
    return AlipayClient(CONFIG, httpx.Client(transport=httpx.MockTransport(handler)))


def answer(method: str, node: Mapping[str, object], key: rsa.RSAPrivateKey = ALIPAY_KEY) -> bytes:
    text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    name = signing.response_node_name(method)
    return signing.signed_response(name, text, key).encode()


def test_call_signs_the_request_and_returns_the_verified_node() -> None:
    seen: list[dict[str, str]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and str(request.url) == GATEWAY
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        signing.verify_request(params, APP_KEY.public_key())
        seen.append(params)
        return httpx.Response(200, content=answer(params["method"], {"code": "10000", "x": "1"}))

    node = client(gateway).call("alipay.trade.query", {"out_trade_no": "PG1", "subject": "中文"})
    assert node == {"code": "10000", "x": "1"}
    params = seen[0]
    assert params["app_id"] == CONFIG.app_id and params["sign_type"] == "RSA2"
    assert params["biz_content"] == '{"out_trade_no":"PG1","subject":"中文"}'
    sent_at = parse_beijing_time(params["timestamp"])
    assert abs((datetime.now(BEIJING) - sent_at).total_seconds()) < 60
    assert "notify_url" not in params and "return_url" not in params


def test_a_business_error_is_an_api_error_with_alipays_codes() -> None:
    node = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"}
    gateway = client(lambda r: httpx.Response(200, content=answer("alipay.trade.query", node)))
    with pytest.raises(AlipayApiError) as caught:
        gateway.call("alipay.trade.query", {"out_trade_no": "PG1"})
    error = caught.value
    assert (error.code, error.gateway_code, error.verified) == (
        "ACQ.TRADE_NOT_EXIST",
        "40004",
        True,
    )
    assert not error.retryable


@pytest.mark.parametrize(
    "node",
    [
        {"code": "20000", "sub_code": "isp.unknow-error"},
        {"code": "40004", "sub_code": "ACQ.SYSTEM_ERROR"},
    ],
)
def test_system_errors_are_retryable(node: dict[str, object]) -> None:
    gateway = client(lambda r: httpx.Response(200, content=answer("alipay.trade.refund", node)))
    with pytest.raises(AlipayApiError) as caught:
        gateway.call("alipay.trade.refund", {})
    assert caught.value.retryable


def test_unsigned_tampered_or_foreign_answers() -> None:
    unsigned_ok = b'{"alipay_trade_query_response":{"code":"10000"}}'
    tampered = answer("alipay.trade.query", {"code": "10000", "a": "1"}).replace(b'"1"', b'"2"')
    foreign = answer("alipay.trade.query", {"code": "10000"}, key=APP_KEY)
    for body in (unsigned_ok, tampered, foreign):
        gateway = client(lambda r, body=body: httpx.Response(200, content=body))  # type: ignore[misc]
        with pytest.raises(ChannelError) as caught:
            gateway.call("alipay.trade.query", {})
        assert caught.value.code == "INVALID_RESPONSE_SIGNATURE" and caught.value.retryable
    unsigned_error = b'{"error_response":{"code":"40002","sub_code":"isv.invalid-app-id"}}'
    gateway = client(lambda r: httpx.Response(200, content=unsigned_error))
    with pytest.raises(AlipayApiError) as error:
        gateway.call("alipay.trade.query", {})
    assert error.value.code == "isv.invalid-app-id" and not error.value.verified


def test_transport_failures_are_retryable_channel_errors() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ChannelError) as caught:
        client(timeout).call("alipay.trade.query", {})
    assert (caught.value.code, caught.value.retryable) == ("TIMEOUT", True)
    with pytest.raises(ChannelError) as status:
        client(lambda r: httpx.Response(502)).call("alipay.trade.query", {})
    assert (status.value.code, status.value.retryable) == ("HTTP_502", True)
    with pytest.raises(ChannelError) as garbage:
        client(lambda r: httpx.Response(200, content=b"<html>")).call("alipay.trade.query", {})
    assert garbage.value.code == "INVALID_RESPONSE"


def test_page_pay_builds_a_signed_redirect_and_form() -> None:
    gateway = client(lambda r: httpx.Response(500))
    form = gateway.page_pay(
        WAP_PAY,
        {"out_trade_no": "PG1", "total_amount": "0.01", "subject": '<b>"x"</b>'},
        return_url="http://shop.test/back",
        notify_url="http://shop.test/notify",
    )
    url = urlsplit(form.url())
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    assert f"{url.scheme}://{url.netloc}{url.path}" == GATEWAY
    assert params["method"] == WAP_PAY and params["return_url"] == "http://shop.test/back"
    signing.verify_request(params, APP_KEY.public_key())
    page = form.html()
    assert 'action="http://gateway.test/gateway.do?charset=utf-8"' in page
    assert "&lt;b&gt;" in page and "<b>" not in page  # values are escaped
    with pytest.raises(ValueError):
        gateway.page_pay("alipay.trade.query", {}, return_url=None, notify_url=None)


def test_notify_verification() -> None:
    form = signing.sign_notify({"trade_status": "TRADE_SUCCESS", "app_id": "1"}, ALIPAY_KEY)
    gateway = client(lambda r: httpx.Response(500))
    assert gateway.verify_notify(form)["trade_status"] == "TRADE_SUCCESS"
    assert gateway.verify_return(form) == form
    with pytest.raises(signing.SignatureError):
        gateway.verify_notify({**form, "trade_status": "TRADE_CLOSED"})


def test_bill_download_is_bounded() -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gateway.do":
            node = {"code": "10000", "bill_download_url": "http://bills.test/f?fileId=1"}
            return httpx.Response(200, content=answer(signing_method(request), node))
        return httpx.Response(200, content=b"x" * 1000)

    small = AlipayClient(
        dataclasses.replace(CONFIG, max_bill_bytes=999),
        httpx.Client(transport=httpx.MockTransport(gateway)),
    )
    with pytest.raises(ChannelError, match="BILL_TOO_LARGE"):
        small.download_bill(date(2024, 5, 1))
    assert len(client(gateway).download_bill(date(2024, 5, 1))) == 1000


def signing_method(request: httpx.Request) -> str:
    return dict(parse_qsl(request.content.decode()))["method"]


def test_amounts_and_times() -> None:
    assert (to_yuan(1), to_yuan(1234), to_yuan(10_000_000_000)) == ("0.01", "12.34", "100000000.00")
    assert (to_fen("0.01"), to_fen("12.3"), to_fen("88")) == (1, 1230, 8800)
    with pytest.raises(MoneyError):
        to_fen("0.001")
    assert parse_beijing_time("2015-04-28 15:45:57.320").microsecond == 320_000
    assert parse_beijing_time("2015-04-28 15:45:57").utcoffset() is not None
    with pytest.raises(ValueError):
        parse_beijing_time("2015-04-28 15:45:57.x")
