"""Alipay payments end to end through real processes and real HTTP: `paygrid up` with the Alipay
sandbox as its own process; merchant API -> alipay.trade.precreate / page pay -> the payer pays
at the sandbox -> RSA2-signed notify to /callbacks/alipay (answered ``success``) -> ledger ->
merchant notification. Close, expiry and 补单 as for WeChat Pay."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from paygrid.api.client import verify_notification
from paygrid.storage.schema import (
    channel_callbacks,
    ledger_entries,
    ledger_vouchers,
    payment_transitions,
    payments,
)
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, wait_status
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(180)
CHANNEL = "alipay"


def alipay_order(merchant: MerchantReceiver, **extra: Any) -> dict[str, Any]:
    return order(merchant, **{"channel": CHANNEL, "method": "native", **extra})


def sandbox(running: RunningPlatform, method: str, path: str, body: object = None) -> Any:
    answer = running.channel_sandbox(CHANNEL, method, path, body)
    assert answer.status_code < 500, answer.text
    return answer


def pay(running: RunningPlatform, qr_code: str) -> None:
    answer = sandbox(running, "POST", "/sandbox/pay", {"qr_code": qr_code, "outcome": "SUCCESS"})
    assert answer.status_code == 200, answer.text


def at_alipay(running: RunningPlatform, payment_id: str) -> dict[str, Any]:
    orders = sandbox(running, "GET", "/sandbox/orders?limit=1000").json()["orders"]
    found: dict[str, Any] = next(o for o in orders if o["out_trade_no"] == payment_id)
    return found


def transitions(running: RunningPlatform, payment_id: str) -> list[str]:
    db = running.database()
    with db.transaction() as conn:
        causes = [
            r.cause
            for r in conn.execute(
                select(payment_transitions).where(payment_transitions.c.payment_id == payment_id)
            )
        ]
    db.dispose()
    return causes


def test_alipay_qr_payment_end_to_end(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    created = client.create_payment(alipay_order(merchant))
    assert created.status_code == 201, created.text
    payment = created.json()
    assert (payment["status"], payment["channel"], payment["method"]) == (
        "PAYING",
        CHANNEL,
        "native",
    )
    qr_code = payment["code_url"]
    assert qr_code.startswith(running.sandbox_urls[CHANNEL] + "/sandbox/qr/bax")
    assert payment["payer_action"] == {"kind": "qr_code", "content": qr_code}
    assert at_alipay(running, payment["payment_id"])["trade_state"] == "UNSCANNED"

    pay(running, qr_code)
    paid = wait_status(client, payment["payment_id"], "SUCCESS")
    assert len(paid["channel_trade_no"]) == 28 and paid["refunded_amount"] == 0

    # Alipay's notify reached /callbacks/alipay and was answered with exactly "success".
    sent = sandbox(running, "GET", f"/sandbox/notifications?out_trade_no={paid['payment_id']}")
    [notify] = sent.json()["notifications"]
    assert (notify["state"], notify["last_status"], notify["last_answer"]) == (
        "DELIVERED",
        200,
        "success",
    )
    assert transitions(running, payment["payment_id"]) == [
        "order_placed:alipay",
        "callback:alipay",
    ]

    wait_until(lambda: len(merchant.received) >= 1)
    headers, body = merchant.received[0]
    assert verify_notification(running.credentials["secret"], headers, body)
    note = json.loads(body)
    assert (note["type"], note["data"]) == ("payment.succeeded", paid)

    # One capture voucher; the channel's cost at Alipay's 0.60 %.
    db = running.database()
    with db.transaction() as conn:
        [voucher] = conn.execute(
            select(ledger_vouchers).where(ledger_vouchers.c.business_ref == paid["payment_id"])
        ).all()
        entries = conn.execute(
            select(ledger_entries).where(ledger_entries.c.voucher_id == voucher.voucher_id)
        ).all()
    db.dispose()
    book = sorted((e.account_code, e.direction, e.amount) for e in entries)
    assert book == [
        ("channel_cost:alipay:CNY", "D", 60),
        ("fee_income:CNY", "C", 60),
        (f"merchant_pending_settlement:{paid['mchid']}:CNY", "C", 9940),
        ("pending_clearing:alipay:CNY", "C", 60),
        ("pending_clearing:alipay:CNY", "D", 10000),
    ]
    refused = client.close_payment(payment["payment_id"])
    assert (refused.status_code, refused.json()["code"]) == (409, "PAYMENT_ALREADY_PAID")
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr


def test_alipay_page_pay_redirects_to_the_sandbox_cashier(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    back = "https://shop.example/thanks"
    created = client.create_payment(alipay_order(merchant, method="page", return_url=back))
    assert created.status_code == 201, created.text
    payment = created.json()
    action = payment["payer_action"]
    assert action["kind"] == "redirect" and "code_url" not in payment
    gateway = running.sandbox_urls[CHANNEL] + "/gateway.do?"
    assert action["url"].startswith(gateway)
    signed = dict(parse_qsl(urlsplit(action["url"]).query))
    assert (signed["method"], signed["return_url"]) == ("alipay.trade.page.pay", back)
    assert signed["notify_url"] == running.api_url + "/callbacks/alipay"

    with httpx.Client(follow_redirects=True, timeout=10.0) as browser:
        page = browser.get(action["url"])  # the payer's browser follows the redirect
    assert page.status_code == 200 and "/sandbox/cashier/" in str(page.url)
    assert payment["payment_id"] in page.text
    assert at_alipay(running, payment["payment_id"])["trade_state"] == "WAIT_BUYER_PAY"

    app_id = sandbox(running, "GET", "/sandbox/credentials").json()["app_id"]
    form = {"app_id": app_id, "out_trade_no": payment["payment_id"], "outcome": "SUCCESS"}
    returned = httpx.post(
        running.sandbox_urls[CHANNEL] + "/sandbox/pay", data=form, follow_redirects=False
    )
    assert returned.status_code == 303 and returned.headers["location"].startswith(back + "?")
    wait_status(client, payment["payment_id"], "SUCCESS")


def test_alipay_close_and_expiry(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()

    # Scanned, not paid: expiry closes it at Alipay too, and the payer can no longer pay.
    scanned = client.create_payment(alipay_order(merchant)).json()
    assert httpx.get(scanned["code_url"], timeout=10).status_code == 200  # the payer scans
    assert at_alipay(running, scanned["payment_id"])["trade_state"] == "WAIT_BUYER_PAY"
    db = running.database()
    with db.transaction() as conn:  # time passes: the payment's expire_at is behind us
        conn.execute(
            update(payments)
            .where(payments.c.payment_id == scanned["payment_id"])
            .values(expire_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    db.dispose()
    assert wait_status(client, scanned["payment_id"], "CLOSED")["closed_at"]
    assert at_alipay(running, scanned["payment_id"])["trade_state"] == "TRADE_CLOSED"
    late = sandbox(
        running, "POST", "/sandbox/pay", {"qr_code": scanned["code_url"], "outcome": "SUCCESS"}
    )
    assert (late.status_code, late.json()["code"]) == (409, "TRADE_CLOSED")
    assert client.get_payment(scanned["payment_id"]).json()["status"] == "CLOSED"

    # Never scanned: the merchant closes it; Alipay has no trade to close, and its QR dies at
    # time_expire (the payment's expire_at), after which the payer cannot pay it.
    unscanned = client.create_payment(alipay_order(merchant)).json()
    closed = client.close_payment(unscanned["payment_id"])
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    assert at_alipay(running, unscanned["payment_id"])["trade_state"] == "UNSCANNED"
    expire_at = at_alipay(running, unscanned["payment_id"])["expire_at"]
    assert abs(expire_at - datetime.fromisoformat(unscanned["expire_at"]).timestamp()) < 1
    store = running.data_dir / "sandbox" / CHANNEL / "alipay-sandbox.sqlite3"
    with sqlite3.connect(store, timeout=10) as conn:  # time passes at Alipay as well
        conn.execute(
            "UPDATE trades SET expire_at = ? WHERE out_trade_no = ?",
            (time.time() - 1, unscanned["payment_id"]),
        )
    late = sandbox(
        running, "POST", "/sandbox/pay", {"qr_code": unscanned["code_url"], "outcome": "SUCCESS"}
    )
    assert (late.status_code, late.json()["code"]) == (410, "QR_CODE_EXPIRED")
    assert client.get_payment(unscanned["payment_id"]).json()["status"] == "CLOSED"


def test_alipay_recovery_query_when_notifies_never_come(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    """补单: the sandbox drops every notify; the scheduler's query finds the money. Before the
    payer scans, the query's ACQ.TRADE_NOT_EXIST changes nothing."""
    running = platform_factory(env={"PAYGRID_RECOVERY_AFTER_S": "1"})
    client = running.client()
    assert sandbox(running, "POST", "/sandbox/faults", {"drop_rate": 1.0}).status_code == 200
    payment = client.create_payment(alipay_order(merchant)).json()
    time.sleep(3)  # several 补单 rounds while Alipay has no trade yet
    assert client.get_payment(payment["payment_id"]).json()["status"] == "PAYING"
    pay(running, payment["code_url"])
    wait_status(client, payment["payment_id"], "SUCCESS", timeout=30)
    assert transitions(running, payment["payment_id"])[-1] == "recovery_query"
    db = running.database()
    with db.transaction() as conn:
        assert conn.execute(select(channel_callbacks)).all() == []
    db.dispose()
    wait_until(lambda: len(merchant.received) == 1)


def test_forged_alipay_notify_changes_nothing(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    assert sandbox(running, "POST", "/sandbox/faults", {"drop_rate": 1.0}).status_code == 200
    payment = client.create_payment(alipay_order(merchant)).json()
    pay(running, payment["code_url"])
    creds = sandbox(running, "GET", "/sandbox/credentials").json()
    forged = {
        "notify_type": "trade_status_sync",
        "notify_id": "forged-1",
        "app_id": creds["app_id"],
        "seller_id": creds["seller_id"],
        "out_trade_no": payment["payment_id"],
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "100.00",
        "gmt_payment": "2026-01-01 00:00:00",
        "sign_type": "RSA2",
        "sign": "Zm9yZ2Vk",
    }
    reply = httpx.post(
        f"{running.api_url}/callbacks/alipay",
        content=urlencode(forged).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert (reply.status_code, reply.text) == (401, "fail")  # anything but "success": retried
    assert client.get_payment(payment["payment_id"]).json()["status"] == "PAYING"
    db = running.database()
    with db.transaction() as conn:
        assert conn.execute(select(channel_callbacks)).all() == []
    db.dispose()
