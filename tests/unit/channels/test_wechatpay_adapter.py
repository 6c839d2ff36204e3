"""WechatPayAdapter: against the sandbox app in process, and against scripted answers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from paygrid.channels.ports import (
    CallbackRefusal,
    CallbackRejected,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    PayerActionKind,
    TradeState,
)
from paygrid.channels.wechatpay import WechatPayAdapter, WechatPayConfig, signing
from paygrid.channels.wechatpay.adapter import rfc3339_china
from paygrid.channels.wechatpay.credentials import (
    SandboxCredentials,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.wechatpay.sandbox import create_app
from paygrid.channels.wechatpay.sandbox.service import WechatPaySandbox
from paygrid.kernel.money import Money

BASE = "http://testserver"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wechatpay")


@pytest.fixture(scope="module")
def creds(data_dir: Path) -> SandboxCredentials:
    return load_or_create_sandbox_credentials(data_dir)


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(data_dir, BASE)) as test_client:
        yield test_client


def sandbox_of(client: TestClient) -> WechatPaySandbox:
    sandbox = client.app.state.sandbox  # type: ignore[attr-defined]
    assert isinstance(sandbox, WechatPaySandbox)
    return sandbox


def order(ref: str, fen: int = 100, **extra: object) -> OrderRequest:
    return OrderRequest(
        payment_ref=ref,
        amount=Money(fen, "CNY"),
        description="测试",
        notify_url="http://127.0.0.1:9/notify",
        method="native",
        **extra,  # type: ignore[arg-type]
    )


def test_order_query_close_against_the_app(client: TestClient, creds: SandboxCredentials) -> None:
    adapter = WechatPayAdapter(
        WechatPayConfig.from_credentials(creds.merchant_view(), BASE), client
    )
    created = adapter.create_order(order("UNIT_0001"))
    assert created.kind is PayerActionKind.QR_CODE
    assert (created.content or "").startswith("weixin://wxpay/bizpayurl?pr=")
    assert adapter.query("UNIT_0001").state is TradeState.PENDING
    assert adapter.close("UNIT_0001") is CloseOutcome.CLOSED
    assert adapter.query("UNIT_0001").state is TradeState.CLOSED
    assert adapter.query("UNIT_NONE").state is TradeState.NOT_FOUND


def test_jsapi_h5_app_orders(client: TestClient, creds: SandboxCredentials) -> None:
    adapter = WechatPayAdapter(
        WechatPayConfig.from_credentials(creds.merchant_view(), BASE), client
    )
    jsapi = OrderRequest(
        "UNIT_JSAPI", Money(1, "CNY"), "d", "http://x.test/n", "jsapi", payer_openid="o123"
    )
    merchant_key = signing.load_private_key(creds.private_key).public_key()
    params = adapter.create_order(jsapi)
    assert params.kind is PayerActionKind.APP_PARAMS
    js = params.fields
    assert js["package"].startswith("prepay_id=") and js["signType"] == "RSA"
    signed = f"{js['appId']}\n{js['timeStamp']}\n{js['nonceStr']}\n{js['package']}\n"
    assert signing.rsa_verify(merchant_key, signed.encode(), js["paySign"])
    h5 = OrderRequest(
        "UNIT_H5_01",
        Money(1, "CNY"),
        "d",
        "http://x.test/n",
        "h5",
        payer_ip="1.2.3.4",
        return_url="https://shop.example/back?o=1",
    )
    redirect = adapter.create_order(h5)
    assert redirect.kind is PayerActionKind.REDIRECT
    assert (redirect.url or "").startswith(BASE + "/sandbox/scan/")
    assert (redirect.url or "").endswith("&redirect_url=https%3A%2F%2Fshop.example%2Fback%3Fo%3D1")
    app_order = OrderRequest("UNIT_APP01", Money(1, "CNY"), "d", "http://x.test/n", "app")
    app = adapter.create_order(app_order).fields
    assert app["package"] == "Sign=WXPay" and app["partnerid"] == creds.mchid
    signed = f"{app['appid']}\n{app['timestamp']}\n{app['noncestr']}\n{app['prepayid']}\n"
    assert signing.rsa_verify(merchant_key, signed.encode(), app["sign"])
    with pytest.raises(ChannelError):
        adapter.create_order(OrderRequest("UNIT_JS_02", Money(1, "CNY"), "d", "http://x", "jsapi"))


def test_certificate_mode_fetches_and_caches_certificates(
    client: TestClient, creds: SandboxCredentials
) -> None:
    config = WechatPayConfig.from_credentials(creds.merchant_view(), BASE, mode="certificate")
    assert config.uses_certificates
    adapter = WechatPayAdapter(config, client)
    adapter.create_order(order("UNIT_CERT1"))
    assert adapter.query("UNIT_CERT1").state is TradeState.PENDING


def test_time_expire_is_honoured(client: TestClient, creds: SandboxCredentials) -> None:
    adapter = WechatPayAdapter(
        WechatPayConfig.from_credentials(creds.merchant_view(), BASE), client
    )
    expire = datetime.now(UTC) + timedelta(minutes=5)
    adapter.create_order(order("UNIT_EXP01", expire_at=expire))
    store = sandbox_of(client).store
    stored = store.get_order(creds.mchid, "UNIT_EXP01")
    assert stored is not None and stored.time_expire == rfc3339_china(expire)
    store.update_order(stored.with_changes(expire_at=time.time() - 1))
    assert adapter.query("UNIT_EXP01").state is TradeState.CLOSED
    paid = client.post("/sandbox/pay", json={"mchid": creds.mchid, "out_trade_no": "UNIT_EXP01"})
    assert (paid.status_code, paid.json()["code"]) == (400, "ORDER_CLOSED")


def test_validation_errors_are_final(client: TestClient, creds: SandboxCredentials) -> None:
    adapter = WechatPayAdapter(
        WechatPayConfig.from_credentials(creds.merchant_view(), BASE), client
    )
    with pytest.raises(ChannelError) as info:
        adapter.create_order(order("short"))  # out_trade_no needs 6-32 chars
    assert (info.value.code, info.value.retryable) == ("PARAM_ERROR", False)
    with pytest.raises(ChannelError):
        adapter.create_order(OrderRequest("UNIT_USD01", Money(1, "USD"), "d", "http://x", "native"))
    with pytest.raises(ValueError):
        rfc3339_china(datetime(2030, 1, 1))


def test_callback_from_the_sandbox_parses(client: TestClient, creds: SandboxCredentials) -> None:
    adapter = WechatPayAdapter(
        WechatPayConfig.from_credentials(creds.merchant_view(), BASE), client
    )
    adapter.create_order(order("UNIT_CB001", 4321))
    client.post("/sandbox/pay", json={"mchid": creds.mchid, "out_trade_no": "UNIT_CB001"})
    sandbox = sandbox_of(client)
    [row] = sandbox.store.list_notifications("UNIT_CB001", 10)
    headers = sandbox.sign_callback(row.body, probe=False)
    callback = adapter.parse_callback(headers, row.body)
    assert callback.notify_id == row.notify_id
    assert callback.trade.amount == Money(4321, "CNY")
    assert callback.trade.state is TradeState.SUCCESS
    assert (callback.trade.merchant_id, callback.trade.app_id) == (creds.mchid, creds.appid)
    assert callback.trade.defect is None  # the sandbox seals it as WeChat does: "transaction"
    assert adapter.account.merchant_id == creds.mchid and adapter.account.app_id == creds.appid
    other_key = dict(creds.merchant_view(), apiv3_key="x" * 32)
    stranger = WechatPayAdapter(WechatPayConfig.from_credentials(other_key, BASE), client)
    with pytest.raises(CallbackRejected) as refused:
        stranger.parse_callback(headers, row.body)  # signature fine, AEAD key wrong
    assert refused.value.refusal is CallbackRefusal.UNDECRYPTABLE
    tampered = row.body.replace(b'"TRANSACTION.SUCCESS"', b'"TRANSACTION.SUCCESX"')
    with pytest.raises(CallbackRejected) as refused:
        adapter.parse_callback(headers, tampered)
    assert refused.value.refusal is CallbackRefusal.BAD_SIGNATURE


def sealed_callback(
    creds: SandboxCredentials,
    transaction: object,
    associated_data: str = "transaction",
    original_type: str = "transaction",
) -> tuple[dict[str, str], bytes]:
    """A callback signed and sealed as the sandbox (WeChat) would, with the given content."""
    resource = signing.aead_encrypt(creds.apiv3_key, json.dumps(transaction), associated_data)
    body = json.dumps(
        {
            "id": "n-1",
            "event_type": "TRANSACTION.SUCCESS",
            "resource_type": "encrypt-resource",
            "resource": {**resource, "original_type": original_type},
        }
    ).encode()
    key = signing.load_private_key(creds.public_key_private)
    return signing.sign_response(body, key, creds.public_key_id), body


def test_callback_fields_left_out_are_none_not_defaults(creds: SandboxCredentials) -> None:
    adapter = scripted(creds, lambda request: httpx.Response(500))
    paid = {"trade_state": "SUCCESS"}
    cases: list[tuple[object, dict[str, object]]] = [
        ({"out_trade_no": "R1"}, {"state": None, "amount": None, "merchant_id": None}),
        ({**paid, "amount": {"currency": "CNY"}}, {"amount": None}),
        ({**paid, "amount": {"total": 900}}, {"amount": None}),  # no currency: no CNY default
        ({**paid, "amount": {"total": "900", "currency": "CNY"}}, {"amount": None}),
        ({**paid, "amount": {"total": True, "currency": "CNY"}}, {"amount": None}),
        ({"trade_state": "WHAT", "mchid": 7, "appid": ""}, {"state": None, "merchant_id": None}),
        (
            {**paid, "amount": {"total": 900, "currency": "USD"}},
            {"amount": Money(900, "USD"), "state": TradeState.SUCCESS, "payment_ref": None},
        ),
    ]
    for transaction, expected in cases:
        headers, body = sealed_callback(creds, transaction)
        trade = adapter.parse_callback(headers, body).trade
        for name, value in expected.items():
            assert getattr(trade, name) == value, (transaction, name)


@pytest.mark.parametrize(
    "associated_data, original_type", [("refund", "transaction"), ("", "transaction"),
                                       ("transaction", "refund")]
)  # fmt: skip
def test_resource_sealed_for_something_else_is_a_defect(
    creds: SandboxCredentials, associated_data: str, original_type: str
) -> None:
    """Decrypted with the associated_data it carries (as WeChat does), then required to be a
    transaction: otherwise the trade carries a defect the payment core refuses."""
    adapter = scripted(creds, lambda request: httpx.Response(500))
    transaction = {"out_trade_no": "R1", "trade_state": "SUCCESS", "mchid": creds.mchid}
    headers, body = sealed_callback(creds, transaction, associated_data, original_type)
    trade = adapter.parse_callback(headers, body).trade
    assert trade.defect is not None and "sealed" in trade.defect
    assert trade.payment_ref == "R1"


def test_malformed_authentic_callbacks_are_refused_as_malformed(creds: SandboxCredentials) -> None:
    adapter = scripted(creds, lambda request: httpx.Response(500))
    key = signing.load_private_key(creds.public_key_private)
    for body in (b"[]", b"{", b'{"id": "n", "event_type": "REFUND.SUCCESS"}', b"{}"):
        headers = signing.sign_response(body, key, creds.public_key_id)
        with pytest.raises(CallbackRejected) as refused:
            adapter.parse_callback(headers, body)
        assert refused.value.refusal is CallbackRefusal.MALFORMED, body
    headers, body = sealed_callback(creds, ["not", "an", "object"])
    with pytest.raises(CallbackRejected) as refused:
        adapter.parse_callback(headers, body)
    assert refused.value.refusal is CallbackRefusal.MALFORMED
    unknown_serial = signing.sign_response(body, key, "PUB_KEY_ID_0000")
    with pytest.raises(CallbackRejected) as refused:
        adapter.parse_callback(unknown_serial, body)
    assert refused.value.refusal is CallbackRefusal.BAD_SIGNATURE


# --- scripted answers -------------------------------------------------------------------------


def scripted(
    creds: SandboxCredentials, answer: Callable[[httpx.Request], httpx.Response]
) -> WechatPayAdapter:
    config = WechatPayConfig.from_credentials(creds.merchant_view(), BASE)
    return WechatPayAdapter(config, httpx.Client(transport=httpx.MockTransport(answer)))


def signed(creds: SandboxCredentials, status: int, payload: object) -> httpx.Response:
    body = json.dumps(payload).encode()
    key = signing.load_private_key(creds.public_key_private)
    headers = signing.sign_response(body, key, creds.public_key_id)
    return httpx.Response(status, content=body, headers=headers)


def test_requests_are_signed_over_what_is_sent(creds: SandboxCredentials) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed(creds, 404, {"code": "ORDER_NOT_EXIST", "message": "no"})

    scripted(creds, answer).query("A|B*C-D_1")
    request = seen[0]
    merchant = signing.load_private_key(creds.private_key).public_key()
    target = request.url.raw_path.decode()
    signing.verify_authorization(
        request.headers["Authorization"], "GET", target, request.content, merchant
    )
    assert request.headers["Wechatpay-Serial"] == creds.public_key_id


def error(status: int, code: str) -> Callable[[SandboxCredentials], httpx.Response]:
    return lambda c: httpx.Response(status, json={"code": code, "message": "x"})


def signed_answer(status: int, payload: object) -> Callable[[SandboxCredentials], httpx.Response]:
    return lambda c: signed(c, status, payload)


@pytest.mark.parametrize(
    "answer, code, retryable",
    [
        (error(500, "SYSTEM_ERROR"), "SYSTEM_ERROR", True),
        (lambda c: httpx.Response(502, text="bad gateway"), "HTTP_502", True),
        (error(429, "FREQUENCY_LIMITED"), "FREQUENCY_LIMITED", True),
        (error(200, "UNSIGNED"), "INVALID_RESPONSE_SIGNATURE", True),
        (error(404, "ORDER_NOT_EXIST"), "INVALID_RESPONSE_SIGNATURE", True),
        (signed_answer(400, {"code": "PARAM_ERROR", "message": "x"}), "PARAM_ERROR", False),
    ],
)
def test_answers_map_to_channel_errors(
    creds: SandboxCredentials,
    answer: Callable[[SandboxCredentials], httpx.Response],
    code: str,
    retryable: bool,
) -> None:
    adapter = scripted(creds, lambda request: answer(creds))
    with pytest.raises(ChannelError) as info:
        adapter.query("R")
    assert (info.value.code, info.value.retryable) == (code, retryable)


def test_network_failures_are_retryable(creds: SandboxCredentials) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for answer, code in ((refuse, "NETWORK_ERROR"), (slow, "TIMEOUT")):
        with pytest.raises(ChannelError) as info:
            scripted(creds, answer).query("R")
        assert (info.value.code, info.value.retryable) == (code, True)


def test_bill_hash_is_checked(creds: SandboxCredentials) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/bill/tradebill":
            meta = {
                "hash_type": "SHA1",
                "hash_value": "0" * 40,
                "download_url": BASE + "/v3/billdownload/file?token=t",
            }
            return signed(creds, 200, meta)
        return httpx.Response(200, content=b"not the bill")

    with pytest.raises(ChannelError) as info:
        scripted(creds, answer).download_bill(date(2026, 1, 1))
    assert (info.value.code, info.value.retryable) == ("BILL_HASH_MISMATCH", True)


def test_callback_replies(creds: SandboxCredentials) -> None:
    adapter = scripted(creds, lambda request: httpx.Response(500))
    assert adapter.callback_ack().status == 204
    nack = adapter.callback_nack("签名错误", CallbackRefusal.BAD_SIGNATURE)
    assert nack.status == 401
    assert json.loads(nack.body) == {"code": "SIGN_ERROR", "message": "签名错误"}
    exact = {refusal: adapter.callback_nack("x", refusal).status for refusal in CallbackRefusal}
    assert exact == {
        CallbackRefusal.BAD_SIGNATURE: 401,
        CallbackRefusal.UNDECRYPTABLE: 400,
        CallbackRefusal.MALFORMED: 400,
        CallbackRefusal.UNKNOWN_PAYMENT: 404,
        CallbackRefusal.RETRY_LATER: 503,
    }


def test_query_answer_is_a_fact_with_absent_fields_explicit(creds: SandboxCredentials) -> None:
    """An unknown trade_state or a missing amount is no ChannelError: the payment core gets the
    fact with None and refuses it (MISSING_FIELD), recorded for `paygrid check`."""
    answer = {"trade_state": "WHAT", "out_trade_no": "R", "mchid": creds.mchid}
    trade = scripted(creds, lambda request: signed(creds, 200, answer)).query("R")
    assert (trade.state, trade.raw_state, trade.amount) == (None, "WHAT", None)
    assert (trade.payment_ref, trade.merchant_id, trade.app_id) == ("R", creds.mchid, None)
