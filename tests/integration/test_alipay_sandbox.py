"""The Alipay sandbox as a real process, driven by python-alipay-sdk (only its gateway changed)
and by paygrid's AlipayClient; notifies land on a real local HTTP server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.bill import parse_bill_zip
from paygrid.channels.alipay.client import WAP_PAY, AlipayClient, AlipayConfig
from paygrid.kernel.money import Money
from tests.integration.alipay_helpers import (
    CHINA,
    beijing_today,
    notify_receiver,
    sdk_client,
    start_sandbox,
)
from tests.integration.wechatpay_helpers import SandboxProcess

pytestmark = pytest.mark.timeout(90)
BILL_QUERY = "alipay.data.dataservice.bill.downloadurl.query"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("alipay-sandbox"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        assert client.delete("/sandbox/faults").status_code == 200
        assert client.post("/sandbox/settings", json={"retry_scale": 0.002}).status_code == 200
        yield client


@pytest.fixture
def creds(http: httpx.Client) -> dict[str, str]:
    data: dict[str, str] = http.get("/sandbox/credentials").json()
    return data


def cny(fen: int) -> Money:
    return Money(fen, "CNY")


def new_ref(prefix: str = "PG") -> str:
    return f"{prefix}{secrets.token_hex(8).upper()}"


def pay(http: httpx.Client, outcome: str = "SUCCESS", **trade: str) -> dict[str, Any]:
    response = http.post("/sandbox/pay", json={**trade, "outcome": outcome})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def pay_status(http: httpx.Client, **trade: str) -> int:
    return http.post("/sandbox/pay", json={**trade, "outcome": "SUCCESS"}).status_code


def sdk_verifies(ali: Any, form: dict[str, str]) -> bool:
    data = dict(form)
    sign = data.pop("sign")
    return bool(ali.verify(data, sign))


# --- QR (当面付): precreate, pay, notify, query ------------------------------------------------


def test_sdk_precreate_pay_notify_query(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    assert creds["gateway_url"] == f"{sandbox.base_url}/gateway.do"
    with notify_receiver() as receiver:
        ali = sdk_client(creds, receiver.url)
        ref = new_ref()
        created = ali.api_alipay_trade_precreate(
            subject="沙箱 商品", out_trade_no=ref, total_amount="12.34"
        )
        assert created["code"] == "10000", created
        assert created["qr_code"].startswith(f"{sandbox.base_url}/sandbox/qr/bax")
        before = ali.api_alipay_trade_query(out_trade_no=ref)  # no trade until scanned
        assert (before["code"], before["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")
        again = ali.api_alipay_trade_precreate(
            subject="沙箱 商品", out_trade_no=ref, total_amount="12.34"
        )
        assert again["qr_code"] == created["qr_code"]
        other = ali.api_alipay_trade_precreate(
            subject="沙箱 商品", out_trade_no=ref, total_amount="12.35"
        )
        assert other["sub_code"] == "ACQ.CONTEXT_INCONSISTENT"

        paid = pay(http, qr_code=created["qr_code"])
        [notify] = receiver.wait_for(1)
        assert notify.content_type.startswith("application/x-www-form-urlencoded")
        form = notify.form
        assert sdk_verifies(ali, form)
        assert not sdk_verifies(ali, {**form, "total_amount": "0.01"})
        assert form["notify_id"] == paid["notify_ids"][0]
        assert (form["notify_type"], form["trade_status"]) == ("trade_status_sync", "TRADE_SUCCESS")
        assert (form["out_trade_no"], form["total_amount"]) == (ref, "12.34")
        assert (form["app_id"], form["seller_id"]) == (creds["app_id"], creds["seller_id"])
        assert form["sign_type"] == "RSA2" and form["gmt_payment"] and form["buyer_id"]

        trade = ali.api_alipay_trade_query(out_trade_no=ref)
        assert (trade["code"], trade["trade_status"]) == ("10000", "TRADE_SUCCESS")
        assert (trade["trade_no"], trade["total_amount"]) == (form["trade_no"], "12.34")
        by_no = ali.api_alipay_trade_query(trade_no=form["trade_no"])
        assert by_no["out_trade_no"] == ref
        paid_again = ali.api_alipay_trade_precreate(
            subject="沙箱 商品", out_trade_no=ref, total_amount="12.34"
        )
        assert paid_again["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"


def test_sdk_refunds_partial_repeated_idempotent_and_queried(
    http: httpx.Client, creds: dict[str, str]
) -> None:
    with notify_receiver() as receiver:
        ali = sdk_client(creds, receiver.url)
        ref = new_ref()
        ali.api_alipay_trade_precreate(subject="退款测试", out_trade_no=ref, total_amount="12.34")
        pay(http, app_id=creds["app_id"], out_trade_no=ref)
        receiver.wait_for(1)

        def refund(amount: str, request_no: str) -> dict[str, Any]:
            result: dict[str, Any] = ali.api_alipay_trade_refund(
                refund_amount=amount, out_trade_no=ref, out_request_no=request_no
            )
            return result

        first = refund("1.00", "R1")
        assert (first["code"], first["fund_change"], first["refund_fee"]) == ("10000", "Y", "1.00")
        second = refund("2.50", "R2")
        assert (second["fund_change"], second["refund_fee"]) == ("Y", "3.50")
        repeat = refund("1.00", "R1")
        assert (repeat["fund_change"], repeat["refund_fee"]) == ("N", "3.50")
        assert refund("2.00", "R1")["sub_code"] == "ACQ.DISCORDANT_REPEAT_REQUEST"
        assert refund("8.85", "R3")["sub_code"] == "ACQ.REASON_TRADE_REFUND_FEE_ERR"
        whole = ali.api_alipay_trade_refund(refund_amount="1.00", out_trade_no=ref)
        assert whole["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"

        queried = ali.api_alipay_trade_fastpay_refund_query("R2", out_trade_no=ref)
        assert (queried["refund_amount"], queried["total_amount"]) == ("2.50", "12.34")
        assert queried["refund_status"] == "REFUND_SUCCESS"
        unknown = ali.api_alipay_trade_fastpay_refund_query("NOPE", out_trade_no=ref)
        assert unknown["code"] == "10000" and "refund_status" not in unknown

        rest = refund("8.84", "R3")
        assert (rest["fund_change"], rest["refund_fee"]) == ("Y", "12.34")
        assert ali.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "TRADE_CLOSED"
        assert refund("0.01", "R4")["sub_code"] == "ACQ.TRADE_HAS_CLOSED"
        assert refund("8.84", "R3")["fund_change"] == "N"  # still idempotent once closed

        notifies = receiver.wait_of(ref, 4)
        assert all(sdk_verifies(ali, n) for n in notifies)
        refunds = sorted(
            (n["refund_fee"], n["out_biz_no"], n["trade_status"]) for n in notifies[1:]
        )
        assert refunds == [
            ("1.00", "R1", "TRADE_SUCCESS"),
            ("12.34", "R3", "TRADE_CLOSED"),
            ("3.50", "R2", "TRADE_SUCCESS"),
        ]
        assert all("gmt_refund" in n for n in notifies[1:])


def test_sdk_close(sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]) -> None:
    with notify_receiver() as receiver:
        ali = sdk_client(creds, receiver.url)
        ref = new_ref()
        created = ali.api_alipay_trade_precreate(subject="关单", out_trade_no=ref, total_amount="5")
        unscanned = ali.api_alipay_trade_close(out_trade_no=ref)
        assert unscanned["sub_code"] == "ACQ.TRADE_NOT_EXIST"  # Alipay's quirk: no trade yet
        page = http.get(urlsplit(created["qr_code"]).path)  # the payer scans
        assert page.status_code == 200 and "¥5.00" in page.text
        assert ali.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "WAIT_BUYER_PAY"
        closed = ali.api_alipay_trade_close(out_trade_no=ref)
        assert (closed["code"], closed["out_trade_no"]) == ("10000", ref)
        assert ali.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "TRADE_CLOSED"
        assert ali.api_alipay_trade_close(out_trade_no=ref)["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
        [notify] = receiver.wait_for(1)
        assert notify.form["trade_status"] == "TRADE_CLOSED" and notify.form["gmt_close"]
        refused = http.post("/sandbox/pay", json={"qr_code": created["qr_code"]})
        assert refused.status_code == 409

        paid_ref = new_ref()
        ali.api_alipay_trade_precreate(subject="x", out_trade_no=paid_ref, total_amount="1.00")
        pay(http, app_id=creds["app_id"], out_trade_no=paid_ref)
        paid_close = ali.api_alipay_trade_close(out_trade_no=paid_ref)
        assert paid_close["sub_code"] == "ACQ.TRADE_STATUS_ERROR"


def test_bad_signature_unknown_app_and_missing_params_get_signed_errors(
    sandbox: SandboxProcess, creds: dict[str, str]
) -> None:
    other = signing.private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    forged = sdk_client(creds, app_private_key=other).api_alipay_trade_query(out_trade_no="X1")
    assert (forged["code"], forged["sub_code"]) == ("40002", "isv.invalid-signature")
    unknown = sdk_client(creds, app_id="2021000000000000").api_alipay_trade_query(out_trade_no="X")
    assert (unknown["code"], unknown["sub_code"]) == ("40002", "isv.invalid-app-id")

    alipay_key = signing.load_public_key(creds["alipay_public_key"])
    gateway = creds["gateway_url"]
    query = {"app_id": creds["app_id"], "method": "alipay.trade.query", "version": "1.0"}
    unsigned = httpx.get(gateway, params={**query, "sign_type": "RSA2"})
    assert unsigned.status_code == 200
    node = signing.verify_response(unsigned.text, "alipay.trade.query", alipay_key)
    assert (node["code"], node["sub_code"]) == ("40001", "isv.missing-signature")
    empty = httpx.post(gateway, data={})
    assert empty.status_code == 200
    name, _, _ = signing.read_response(empty.text, "alipay.trade.query")
    assert name == "error_response"
    node = signing.verify_response(empty.text, "alipay.trade.query", alipay_key)
    assert (node["code"], node["sub_code"]) == ("40001", "isv.missing-app-id")


# --- page and wap pay (电脑网站/手机网站支付) ---------------------------------------------------


def test_page_pay_in_the_browser_returns_signed_to_return_url(
    sandbox: SandboxProcess, creds: dict[str, str]
) -> None:
    with notify_receiver() as receiver:
        ali = sdk_client(creds, receiver.url)
        ref = new_ref()
        return_url = "http://127.0.0.1:9/shop/return?order=1"
        signed = ali.api_alipay_trade_page_pay(
            subject="网页支付", out_trade_no=ref, total_amount="0.01", return_url=return_url
        )
        with httpx.Client(base_url=sandbox.base_url, follow_redirects=False) as browser:
            forged = browser.get(f"{creds['gateway_url']}?{signed.replace('0.01', '0.02')}")
            assert forged.status_code == 200 and "isv.invalid-signature" in forged.text
            arrived = browser.get(f"{creds['gateway_url']}?{signed}")
            assert arrived.status_code == 302, arrived.text
            cashier = arrived.headers["location"]
            assert cashier.startswith("/sandbox/cashier/")
            absent = ali.api_alipay_trade_query(out_trade_no=ref)
            assert absent["sub_code"] == "ACQ.TRADE_NOT_EXIST"
            page = browser.get(cashier)
            assert page.status_code == 200 and "¥0.01" in page.text and "网页支付" in page.text
            assert ali.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "WAIT_BUYER_PAY"
            token = cashier.rsplit("/", 1)[1]
            failed = browser.post("/sandbox/pay", data={"token": token, "outcome": "FAIL"})
            assert failed.status_code == 200 and "支付失败" in failed.text
            assert ali.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "WAIT_BUYER_PAY"
            done = browser.post("/sandbox/pay", data={"token": token, "outcome": "SUCCESS"})
        assert done.status_code == 303
        location = done.headers["location"]
        assert location.startswith(return_url + "&")
        params = dict(parse_qsl(urlsplit(location).query))
        assert params.pop("order") == "1"
        assert sdk_verifies(ali, params)
        assert params["method"] == "alipay.trade.page.pay.return"
        assert (params["out_trade_no"], params["total_amount"]) == (ref, "0.01")
        [notify] = receiver.wait_for(1)
        assert notify.form["trade_status"] == "TRADE_SUCCESS"
        assert notify.form["trade_no"] == params["trade_no"]


def test_wap_pay_form_through_paygrids_client(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    client = AlipayClient(AlipayConfig.from_credentials(creds))
    with notify_receiver() as receiver:
        ref = new_ref()
        biz = {
            "out_trade_no": ref,
            "total_amount": "88.88",
            "subject": "手机支付",
            "product_code": "QUICK_WAP_WAY",
        }
        form = client.page_pay(
            WAP_PAY, biz, return_url="http://shop.test/r", notify_url=receiver.url
        )
        submitted = httpx.post(f"{form.action}?charset=utf-8", data=form.fields)
        assert submitted.status_code == 302, submitted.text
        assert "¥88.88" in http.get(submitted.headers["location"]).text
        result = pay(http, app_id=creds["app_id"], out_trade_no=ref)
        back = dict(parse_qsl(urlsplit(result["return_url"]).query))
        assert client.verify_return(back)["method"] == "alipay.trade.wap.pay.return"
        [notify] = receiver.wait_for(1)
        verified = client.verify_notify(notify.form)
        assert (verified["trade_status"], verified["total_amount"]) == ("TRADE_SUCCESS", "88.88")
        node = client.call("alipay.trade.query", {"out_trade_no": ref})
        assert node["trade_status"] == "TRADE_SUCCESS"
        refund = client.call(
            "alipay.trade.refund",
            {"out_trade_no": ref, "refund_amount": "0.88", "out_request_no": "W1"},
        )
        assert refund["refund_fee"] == "0.88"
    client.close()


def test_a_qr_expires_and_an_unpaid_trade_closes_at_time_expire(
    sandbox: SandboxProcess, http: httpx.Client, creds: dict[str, str]
) -> None:
    with notify_receiver() as receiver:
        ali = sdk_client(creds, receiver.url)
        soon = (datetime.now(CHINA) + timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S")
        qr_path: dict[str, str] = {}
        scanned, unscanned = new_ref(), new_ref()
        for ref in (scanned, unscanned):
            made = ali.api_alipay_trade_precreate(
                subject="限时", out_trade_no=ref, total_amount="1.00", time_expire=soon
            )
            assert made["code"] == "10000", made
            qr_path[ref] = urlsplit(made["qr_code"]).path
        assert http.get(qr_path[scanned]).status_code == 200  # only one is scanned
        [closed] = receiver.wait_of(scanned, 1, timeout=15)
        assert closed["trade_status"] == "TRADE_CLOSED" and closed["gmt_close"]
        assert ali.api_alipay_trade_query(out_trade_no=scanned)["trade_status"] == "TRADE_CLOSED"
        refused = http.post(
            "/sandbox/pay", json={"app_id": creds["app_id"], "out_trade_no": scanned}
        )
        assert refused.status_code == 409
        never = ali.api_alipay_trade_query(out_trade_no=unscanned)
        assert never["sub_code"] == "ACQ.TRADE_NOT_EXIST"
        assert http.get(qr_path[unscanned]).status_code == 410
        assert receiver.of(unscanned) == []


# --- bills (对账单) ---------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[SandboxProcess]:
    """A sandbox of its own: the test closes days and moves the clock settings."""
    process = start_sandbox(tmp_path / "alipay")
    try:
        yield process
    finally:
        process.stop()


def test_bill_of_payments_and_refunds_after_close_day(fresh: SandboxProcess) -> None:
    with fresh.http() as http:
        creds = http.get("/sandbox/credentials").json()
        ali = sdk_client(creds)
        today = beijing_today().isoformat()
        not_yet = ali.server_api(BILL_QUERY, {"bill_type": "trade", "bill_date": today})
        assert (not_yet["code"], not_yet["sub_code"]) == ("40004", "isp.bill_not_exist")
        refs = [new_ref(), new_ref()]
        for ref, total in zip(refs, ("12.34", "100.00"), strict=True):
            ali.api_alipay_trade_precreate(subject="对账", out_trade_no=ref, total_amount=total)
            pay(http, app_id=creds["app_id"], out_trade_no=ref)
        for amount, request_no in (("1.00", "B1"), ("11.34", "B2")):
            made = ali.api_alipay_trade_refund(
                refund_amount=amount, out_trade_no=refs[0], out_request_no=request_no
            )
            assert made["fund_change"] == "Y"
        closing = http.post("/sandbox/close-day", json={"date": today})
        assert closing.status_code == 200 and closing.json()["bill_ready"] is True
        future = (beijing_today() + timedelta(days=1)).isoformat()
        assert http.post("/sandbox/close-day", json={"date": future}).status_code == 400

        found = ali.server_api(BILL_QUERY, {"bill_type": "trade", "bill_date": today})
        url = found["bill_download_url"]
        assert "downloadFileName=" in url and f"{creds['pid']}0156_" in url
        lines = parse_bill_zip(httpx.get(url).content)
        got = sorted(
            ((x.payment_ref, x.kind, x.amount, x.fee, x.refund_ref or "") for x in lines), key=repr
        )
        assert all(x.amount.currency == "CNY" for x in lines)
        assert got == sorted(
            [
                (refs[0], "PAYMENT", cny(1234), cny(7), ""),  # 0.6 % of 12.34 = 7.404 fen
                # 7 fen × 1.00 / 12.34 = 0.57 fen, rounded half up (as the ledger books it)
                (refs[0], "REFUND", cny(100), cny(-1), "B1"),
                (refs[0], "REFUND", cny(1134), cny(-6), "B2"),  # the last refund returns the rest
                (refs[1], "PAYMENT", cny(10000), cny(60), ""),
            ],
            key=repr,
        )
        client = AlipayClient(AlipayConfig.from_credentials(creds))
        assert parse_bill_zip(client.download_bill(beijing_today())) == lines
        client.close()
        assert httpx.get(url.replace("fileId=", "fileId=x")).status_code == 404
        bad = ali.server_api(BILL_QUERY, {"bill_type": "trade", "bill_date": "2024-13-01"})
        assert bad["sub_code"] == "isv.invalid_arguments"


def test_bill_faults_and_yesterdays_empty_bill(fresh: SandboxProcess) -> None:
    with fresh.http() as http:
        creds = http.get("/sandbox/credentials").json()
        ali = sdk_client(creds)
        assert http.post("/sandbox/settings", json={"bill_ready_hour": 0}).status_code == 200
        yesterday = (beijing_today() - timedelta(days=1)).isoformat()
        empty = ali.server_api(BILL_QUERY, {"bill_type": "trade", "bill_date": yesterday})
        assert parse_bill_zip(httpx.get(empty["bill_download_url"]).content) == []
        ref = new_ref()
        ali.api_alipay_trade_precreate(subject="故障", out_trade_no=ref, total_amount="2.00")
        pay(http, app_id=creds["app_id"], out_trade_no=ref)
        today = beijing_today().isoformat()
        http.post("/sandbox/close-day", json={"date": today})

        def lines(**faults: object) -> list[Any]:
            http.delete("/sandbox/faults")
            http.post("/sandbox/faults", json=faults)
            found = ali.server_api(BILL_QUERY, {"bill_type": "trade", "bill_date": today})
            return parse_bill_zip(httpx.get(found["bill_download_url"]).content)

        assert [x.amount.minor for x in lines() if x.payment_ref == ref] == [200]
        assert [x for x in lines(missing_rate=1.0) if x.payment_ref == ref] == []
        assert [x.amount.minor for x in lines(wrong_amount_rate=1.0)] == [201]
        extra = [x for x in lines(extra_lines=2) if x.payment_ref.startswith("SBXEXTRA")]
        assert len(extra) == 2 and all(x.kind == "PAYMENT" for x in extra)


def test_trade_finished_after_the_refund_window_and_state_survives_a_restart(
    fresh: SandboxProcess,
) -> None:
    with fresh.http() as http, notify_receiver() as receiver:
        creds = http.get("/sandbox/credentials").json()
        ali = sdk_client(creds, receiver.url)
        ref = new_ref()
        ali.api_alipay_trade_precreate(subject="完结", out_trade_no=ref, total_amount="3.00")
        pay(http, app_id=creds["app_id"], out_trade_no=ref)
        assert http.post("/sandbox/settings", json={"refund_window_seconds": 1}).status_code == 200
        statuses = [n["trade_status"] for n in receiver.wait_of(ref, 2)]
        assert statuses == ["TRADE_SUCCESS", "TRADE_FINISHED"]
        assert ali.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "TRADE_FINISHED"
        late = ali.api_alipay_trade_refund(refund_amount="1.00", out_trade_no=ref)
        assert late["sub_code"] == "ACQ.TRADE_HAS_FINISHED"
    fresh.stop()
    again = start_sandbox(fresh.data_dir)
    try:
        with again.http() as http:
            assert http.get("/sandbox/credentials").json()["app_id"] == creds["app_id"]
        moved = sdk_client({**creds, "gateway_url": f"{again.base_url}/gateway.do"})
        assert moved.api_alipay_trade_query(out_trade_no=ref)["trade_status"] == "TRADE_FINISHED"
    finally:
        again.stop()
