"""The WeChat Pay sandbox as a real process, driven by wechatpayv3 and by WechatPayAdapter."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygrid.channels.ports import (
    Callback,
    CallbackRejected,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    TradeState,
)
from paygrid.channels.wechatpay import WechatPayAdapter, WechatPayConfig
from paygrid.channels.wechatpay.bill import parse_trade_bill
from paygrid.channels.wechatpay.signing import build_authorization, load_private_key
from paygrid.kernel.money import Money
from tests.integration.wechatpay_helpers import (
    SandboxProcess,
    beijing_date,
    callback_receiver,
    sdk_client,
    start_sandbox,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.serial]  # delay/reorder timing: alone


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("wechatpay-sandbox"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        assert client.delete("/sandbox/faults").status_code == 200
        settings = {"retry_scale": 0.01, "callback_serial_mode": "public_key"}
        assert client.post("/sandbox/settings", json=settings).status_code == 200
        yield client


@pytest.fixture
def creds(http: httpx.Client) -> dict[str, str]:
    data: dict[str, str] = http.get("/sandbox/credentials").json()
    return data


def new_ref(prefix: str = "PG") -> str:
    return f"{prefix}{secrets.token_hex(8).upper()}"


def pay(http: httpx.Client, outcome: str = "SUCCESS", **order: str) -> dict[str, Any]:
    response = http.post("/sandbox/pay", json={**order, "outcome": outcome})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def close_day(http: httpx.Client, day: str) -> None:
    response = http.post("/sandbox/close-day", json={"date": day})
    assert response.status_code == 200, response.text


# --- (a), (b) the wechatpayv3 SDK -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
def test_sdk_full_flow(
    mode: str, sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str], tmp_path: Path
) -> None:
    if mode == "certificate":
        http.post("/sandbox/settings", json={"callback_serial_mode": "certificate"})
    with callback_receiver() as receiver:
        cert_dir = tmp_path / "certs"
        wx = sdk_client(creds, sandbox.base_url, receiver.url, mode, cert_dir)
        if mode == "certificate":
            assert (cert_dir / f"{creds['platform_cert_serial_no']}.pem").exists()
        ref = new_ref()
        code, message = wx.pay(
            description="沙箱测试 商品", out_trade_no=ref, amount={"total": 1234}
        )
        assert code == 200, message
        code_url = json.loads(message)["code_url"]
        assert code_url.startswith("weixin://wxpay/bizpayurl?pr=")

        code, message = wx.query(out_trade_no=ref)
        assert (code, json.loads(message)["trade_state"]) == (200, "NOTPAY")

        pay(http, code_url=code_url)
        [received] = receiver.wait_for(1)
        notice = wx.callback(received.headers, received.body)
        assert notice is not None, "the SDK did not verify/decrypt the callback"
        assert notice["event_type"] == "TRANSACTION.SUCCESS"
        envelope = json.loads(received.body)
        assert envelope["resource_type"] == "encrypt-resource"
        assert envelope["resource"]["algorithm"] == "AEAD_AES_256_GCM"
        assert envelope["resource"]["associated_data"] == "transaction"
        assert envelope["resource"]["original_type"] == "transaction"
        assert envelope["create_time"].endswith("+08:00")
        resource = notice["resource"]
        assert resource["out_trade_no"] == ref
        assert resource["trade_state"] == "SUCCESS"
        assert resource["amount"]["total"] == 1234
        expected_serial = creds[
            "public_key_id" if mode == "public_key" else "platform_cert_serial_no"
        ]
        assert received.headers["Wechatpay-Serial"] == expected_serial

        code, message = wx.query(out_trade_no=ref)
        paid = json.loads(message)
        assert (code, paid["trade_state"]) == (200, "SUCCESS")
        code, message = wx.query(transaction_id=paid["transaction_id"])
        assert (code, json.loads(message)["out_trade_no"]) == (200, ref)

        other = new_ref()
        assert wx.pay(description="to close", out_trade_no=other, amount={"total": 1})[0] == 200
        assert wx.close(out_trade_no=other)[0] == 204
        code, message = wx.query(out_trade_no=other)
        assert json.loads(message)["trade_state"] == "CLOSED"
        assert wx.close(out_trade_no=ref)[0] == 400  # ORDERPAID

        bill_date = beijing_date(paid["success_time"]).isoformat()
        close_day(http, bill_date)  # the bill of a day is there once the day has ended
        code, message = wx.trade_bill(bill_date=bill_date)  # the SDK asks for GZIP
        assert code == 200, message
        meta = json.loads(message)
        code, gz = wx.download_bill(meta["download_url"])
        assert code == 200
        content = gzip.decompress(gz)
        assert hashlib.sha1(content).hexdigest() == meta["hash_value"]
        lines = {line.payment_ref: line for line in parse_trade_bill(content)}
        assert lines[ref].amount == Money(1234, "CNY")
        assert lines[ref].channel_trade_no == paid["transaction_id"]
        assert "`12.34" in content.decode("utf-8")
        assert other not in lines


# --- (c) the adapter --------------------------------------------------------------------------


def adapter_for(creds: dict[str, str], base_url: str, mode: str = "public_key") -> WechatPayAdapter:
    return WechatPayAdapter(WechatPayConfig.from_credentials(creds, base_url, mode=mode))


def native(ref: str, notify_url: str, fen: int = 1, **extra: Any) -> OrderRequest:
    return OrderRequest(
        payment_ref=ref,
        amount=Money(fen, "CNY"),
        description="paygrid 测试订单",
        notify_url=notify_url,
        method="native",
        **extra,
    )


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
def test_adapter_full_flow(
    mode: str, sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    if mode == "certificate":
        http.post("/sandbox/settings", json={"callback_serial_mode": "certificate"})
    adapter = adapter_for(creds, sandbox.base_url, mode)
    with callback_receiver() as receiver:
        ref = new_ref()
        expire = datetime.now(UTC) + timedelta(minutes=30)
        created = adapter.create_order(native(ref, receiver.url, 100_001, expire_at=expire))
        code_url = created.content or ""
        assert code_url.startswith("weixin://wxpay/bizpayurl?pr=")
        assert adapter.create_order(native(ref, receiver.url, 100_001, expire_at=expire)) == created
        assert adapter.query(ref).state is TradeState.PENDING

        pay(http, code_url=code_url)
        [received] = receiver.wait_for(1)
        callback = adapter.parse_callback(dict(received.headers.items()), received.body)
        assert isinstance(callback, Callback)
        assert callback.trade.payment_ref == ref
        assert callback.trade.state is TradeState.SUCCESS
        assert callback.trade.amount == Money(100_001, "CNY")
        assert callback.trade.paid_at is not None and callback.trade.paid_at.tzinfo is not None
        assert callback.notify_id == json.loads(received.body)["id"]

        trade = adapter.query(ref)
        assert trade.state is TradeState.SUCCESS
        assert trade.channel_trade_no == callback.trade.channel_trade_no
        assert trade.amount == Money(100_001, "CNY")
        assert adapter.close(ref) is CloseOutcome.ALREADY_PAID

        other = new_ref()
        adapter.create_order(native(other, receiver.url))
        assert adapter.close(other) is CloseOutcome.CLOSED
        assert adapter.query(other).state is TradeState.CLOSED
        assert adapter.query(new_ref("MISSING")).state is TradeState.NOT_FOUND

        assert trade.paid_at is not None
        day = beijing_date(trade.paid_at.isoformat())
        close_day(http, day.isoformat())
        content = adapter.download_bill(day)
        lines = {line.payment_ref: line for line in adapter.parse_bill(content)}
        assert lines[ref].amount == Money(100_001, "CNY")
        assert lines[ref].fee == Money(200, "CNY")  # 0.20% of 1000.01 yuan, half up
        assert lines[ref].kind == "PAYMENT"


def test_adapter_failed_payment_then_expiry_rules(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    adapter = adapter_for(creds, sandbox.base_url)
    ref = new_ref()
    adapter.create_order(native(ref, "http://127.0.0.1:9/notify"))
    pay(http, "FAIL", mchid=creds["mchid"], out_trade_no=ref)
    assert adapter.query(ref).state is TradeState.FAILED
    with pytest.raises(ChannelError) as info:
        past = datetime.now(UTC) - timedelta(seconds=5)
        adapter.create_order(native(new_ref(), "http://127.0.0.1:9/notify", expire_at=past))
    assert (info.value.code, info.value.retryable) == ("INVALID_REQUEST", False)
    with pytest.raises(ChannelError) as info:
        adapter.create_order(native(ref, "http://127.0.0.1:9/notify", fen=2))
    assert info.value.code == "INVALID_REQUEST"


# --- (d) signatures ---------------------------------------------------------------------------


def test_bad_authorization_is_401_sign_error(
    sandbox: SandboxProcess, creds: dict[str, str]
) -> None:
    key = load_private_key(creds["private_key"])
    body = json.dumps({"mchid": creds["mchid"]}).encode()
    path = "/v3/pay/transactions/out-trade-no/NOSUCHORDER/close"
    auth = build_authorization(
        "POST", path, body, mchid=creds["mchid"], serial_no=creds["cert_serial_no"], private_key=key
    )
    with sandbox.http() as client:
        good = client.post(path, content=body, headers={"Authorization": auth})
        assert good.status_code == 404  # authenticated, then: no such order
        tampered = body.replace(b"}", b" }")
        bad = client.post(path, content=tampered, headers={"Authorization": auth})
        assert bad.status_code == 401
        assert bad.json()["code"] == "SIGN_ERROR"
        assert client.post(path, content=body).json()["code"] == "SIGN_ERROR"
        old = build_authorization(
            "POST",
            path,
            body,
            mchid=creds["mchid"],
            serial_no=creds["cert_serial_no"],
            private_key=key,
            timestamp=str(int(time.time()) - 400),
        )
        stale = client.post(path, content=body, headers={"Authorization": old})
        assert (stale.status_code, stale.json()["code"]) == (401, "SIGN_ERROR")


def test_tampered_callback_is_rejected(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    adapter = adapter_for(creds, sandbox.base_url)
    with callback_receiver() as receiver:
        ref = new_ref()
        adapter.create_order(native(ref, receiver.url, 500))
        pay(http, mchid=creds["mchid"], out_trade_no=ref)
        [received] = receiver.wait_for(1)
    headers = dict(received.headers.items())
    assert adapter.parse_callback(headers, received.body).trade.state is TradeState.SUCCESS
    with pytest.raises(CallbackRejected):
        adapter.parse_callback(headers, received.body.replace(b'"id":"', b'"id":"x'))
    probe = {**headers, "Wechatpay-Signature": "WECHATPAY/SIGNTEST/abc"}
    with pytest.raises(CallbackRejected):
        adapter.parse_callback(probe, received.body)
    with pytest.raises(CallbackRejected):  # a certificate-mode merchant has no public key
        adapter_for(creds, sandbox.base_url, "certificate").parse_callback(headers, received.body)


# --- (e) faults -------------------------------------------------------------------------------


def test_duplicate_callbacks_share_the_id(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    http.post("/sandbox/faults", json={"duplicate_rate": 1})
    adapter = adapter_for(creds, sandbox.base_url)
    with callback_receiver() as receiver:
        ref = new_ref()
        adapter.create_order(native(ref, receiver.url))
        pay(http, mchid=creds["mchid"], out_trade_no=ref)
        first, second = receiver.wait_for(2)
    ids = {
        adapter.parse_callback(dict(r.headers.items()), r.body).notify_id for r in (first, second)
    }
    assert len(ids) == 1


def test_dropped_callback_never_arrives_but_query_shows_success(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    http.post("/sandbox/faults", json={"drop_rate": 1})
    adapter = adapter_for(creds, sandbox.base_url)
    with callback_receiver() as receiver:
        ref = new_ref()
        adapter.create_order(native(ref, receiver.url))
        pay(http, mchid=creds["mchid"], out_trade_no=ref)
        time.sleep(1.0)
        assert receiver.received == []
    assert adapter.query(ref).state is TradeState.SUCCESS
    states = http.get("/sandbox/notifications", params={"out_trade_no": ref}).json()
    assert [n["state"] for n in states["notifications"]] == ["DROPPED"]


def test_callback_is_retried_until_acknowledged(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    adapter = adapter_for(creds, sandbox.base_url)
    with callback_receiver(statuses=[500, 400]) as receiver:
        ref = new_ref()
        adapter.create_order(native(ref, receiver.url))
        pay(http, mchid=creds["mchid"], out_trade_no=ref)
        pay(http, mchid=creds["mchid"], out_trade_no=ref)  # paying twice changes nothing
        received = receiver.wait_for(3)
        time.sleep(0.5)
        assert len(receiver.received) == 3
    assert len({json.loads(r.body)["id"] for r in received}) == 1
    [row] = http.get("/sandbox/notifications", params={"out_trade_no": ref}).json()["notifications"]
    assert (row["state"], row["attempts"], row["last_status"]) == ("DELIVERED", 3, 204)


def test_reordered_callbacks_arrive_newest_first(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    http.post("/sandbox/faults", json={"reorder": True})
    adapter = adapter_for(creds, sandbox.base_url)
    with callback_receiver() as receiver:
        refs = [new_ref() for _ in range(3)]
        for ref in refs:
            adapter.create_order(native(ref, receiver.url))
            pay(http, mchid=creds["mchid"], out_trade_no=ref)
        received = receiver.wait_for(3)
    order = [
        adapter.parse_callback(dict(r.headers.items()), r.body).trade.payment_ref for r in received
    ]
    assert order == list(reversed(refs))


def test_api_faults_are_retryable(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    adapter = adapter_for(creds, sandbox.base_url)
    ref = new_ref()
    adapter.create_order(native(ref, "http://127.0.0.1:9/notify"))
    http.post("/sandbox/faults", json={"error_rate": 1})
    with pytest.raises(ChannelError) as info:
        adapter.query(ref)
    assert (info.value.code, info.value.retryable) == ("SYSTEM_ERROR", True)
    http.post("/sandbox/faults", json={"error_rate": 0, "timeout_rate": 1, "timeout_ms": 1500})
    config = WechatPayConfig.from_credentials(creds, sandbox.base_url)
    impatient = WechatPayAdapter(dataclasses.replace(config, read_timeout=0.5))
    other = new_ref()
    with pytest.raises(ChannelError) as info:
        impatient.create_order(native(other, "http://127.0.0.1:9/notify"))
    assert (info.value.code, info.value.retryable) == ("TIMEOUT", True)
    http.delete("/sandbox/faults")
    assert adapter.query(other).state is TradeState.PENDING  # processed although it timed out


def test_bill_faults(sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]) -> None:
    adapter = adapter_for(creds, sandbox.base_url)
    ref = new_ref()
    adapter.create_order(native(ref, "http://127.0.0.1:9/notify", 777))
    paid = pay(http, mchid=creds["mchid"], out_trade_no=ref)["transaction"]
    day = beijing_date(paid["success_time"])
    close_day(http, day.isoformat())
    clean = {line.payment_ref: line for line in adapter.parse_bill(adapter.download_bill(day))}
    http.post("/sandbox/faults", json={"extra_lines": 2, "wrong_amount_rate": 1})
    faulty = {line.payment_ref: line for line in adapter.parse_bill(adapter.download_bill(day))}
    assert len(faulty) == len(clean) + 2
    assert faulty[ref].amount == Money(778, "CNY")
    http.post("/sandbox/faults", json={"extra_lines": 0, "wrong_amount_rate": 0, "missing_rate": 1})
    assert adapter.parse_bill(adapter.download_bill(day)) == []


def test_pay_page_shows_the_order_and_pays_by_form(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    adapter = adapter_for(creds, sandbox.base_url)
    ref = new_ref()
    created = adapter.create_order(native(ref, "http://127.0.0.1:9/notify", 12_345))
    page = http.get("/sandbox/pay", params={"code_url": created.content})
    assert page.status_code == 200
    assert "123.45" in page.text and ref in page.text and 'id="pay"' in page.text
    form = {"mchid": creds["mchid"], "out_trade_no": ref, "outcome": "SUCCESS"}
    done = http.post("/sandbox/pay", data=form)
    assert done.status_code == 200 and "支付成功" in done.text
    assert adapter.query(ref).state is TradeState.SUCCESS
    orders = http.get("/sandbox/orders").json()["orders"]
    assert any(o["out_trade_no"] == ref and o["trade_state"] == "SUCCESS" for o in orders)


def test_state_survives_a_restart(tmp_path: Path) -> None:
    first = start_sandbox(tmp_path)
    try:
        with first.http() as client:
            creds = client.get("/sandbox/credentials").json()
        ref = new_ref()
        adapter_for(creds, first.base_url).create_order(native(ref, "http://127.0.0.1:9/n"))
    finally:
        first.stop()
    second = start_sandbox(tmp_path)
    try:
        with second.http() as client:
            assert client.get("/sandbox/credentials").json() == creds
        assert adapter_for(creds, second.base_url).query(ref).state is TradeState.PENDING
    finally:
        second.stop()
