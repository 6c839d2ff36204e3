"""A payment end to end through real processes and real HTTP, on SQLite and PostgreSQL:
merchant API -> WeChat Pay sandbox -> signed, encrypted callback -> ledger -> notification."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from paygrid.api.client import MerchantClient, verify_notification
from paygrid.storage.schema import (
    channel_callbacks,
    ledger_entries,
    ledger_vouchers,
    payment_transitions,
)
from tests.conftest import PlatformFactory
from tests.integration.wechatpay_helpers import genuine_callback
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(180)


def order(merchant: MerchantReceiver, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "out_trade_no": "o-" + uuid.uuid4().hex[:16],
        "amount": {"total": 10000, "currency": "CNY"},
        "description": "两斤苹果 apples",
        "notify_url": merchant.url,
        "channel": "wechatpay",
        "method": "native",
        "items": [{"sku": "APL", "name": "苹果", "quantity": 2, "unit_amount": 5500}],
        "discounts": [{"name": "满减 coupon", "amount": 1000}],
    }
    body.update(extra)
    return body


def wait_status(
    client: MerchantClient, payment_id: str, status: str, timeout: float = 30.0
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(client.get_payment(payment_id).json())
        return seen.get("status") == status

    wait_until(done, timeout)
    return seen


def pay(running: RunningPlatform, code_url: str, outcome: str = "SUCCESS") -> None:
    response = running.sandbox("POST", "/sandbox/pay", {"code_url": code_url, "outcome": outcome})
    assert response.status_code == 200, response.text


def test_payment_end_to_end(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    secret = running.credentials["secret"]

    created = client.create_payment(order(merchant))
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "PAYING"
    assert payment["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert payment["cashier_url"].startswith(running.cashier_url + "/pay/")
    assert created.headers["request-id"].startswith("req_")

    pay(running, payment["code_url"])
    paid = wait_status(client, payment["payment_id"], "SUCCESS")
    assert paid["refunded_amount"] == 0
    assert paid["channel_trade_no"]
    by_no = client.request("GET", f"/v1/payments?out_trade_no={paid['out_trade_no']}").json()
    assert by_no == paid

    # The merchant gets one signed notification carrying the payment as GET returns it.
    wait_until(lambda: len(merchant.received) >= 1)
    headers, body = merchant.received[0]
    assert verify_notification(secret, headers, body)
    note = json.loads(body)
    assert note["type"] == "payment.succeeded"
    assert note["id"] == headers["Paygrid-Notify-Id"]
    assert note["data"] == paid

    # Closing a paid payment is refused.
    refused = client.close_payment(payment["payment_id"])
    assert refused.status_code == 409
    assert refused.json()["code"] == "PAYMENT_ALREADY_PAID"

    # The ledger: one balanced capture voucher exactly as DESIGN.md's chart.
    db = running.database()
    with db.transaction() as conn:
        vouchers = conn.execute(
            select(ledger_vouchers).where(ledger_vouchers.c.business_ref == payment["payment_id"])
        ).all()
        assert len(vouchers) == 1
        entries = conn.execute(
            select(ledger_entries).where(ledger_entries.c.voucher_id == vouchers[0].voucher_id)
        ).all()
        causes = [
            r.cause
            for r in conn.execute(
                select(payment_transitions).where(
                    payment_transitions.c.payment_id == payment["payment_id"]
                )
            )
        ]
    db.dispose()
    book = sorted((e.account_code.split(":")[0], e.direction, e.amount) for e in entries)
    assert book == [
        ("channel_cost", "D", 20),
        ("fee_income", "C", 60),
        ("merchant_pending_settlement", "C", 9940),
        ("pending_clearing", "C", 20),
        ("pending_clearing", "D", 10000),
    ]
    assert causes == ["order_placed:wechatpay", "callback:wechatpay"]

    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr

    # The merchant's own daily bill (账期 in Asia/Shanghai) lists it with fee and net.
    from datetime import datetime
    from zoneinfo import ZoneInfo

    day = datetime.fromisoformat(paid["paid_at"]).astimezone(ZoneInfo("Asia/Shanghai")).date()
    bill = client.request("GET", f"/v1/bills/{day.isoformat()}")
    assert bill.status_code == 200 and bill.headers["content-type"].startswith("text/csv")
    lines = bill.text.strip().splitlines()
    assert lines[0].startswith("paid_at,payment_id,out_trade_no")
    row = next(line for line in lines[1:] if payment["payment_id"] in line).split(",")
    assert row[6:10] == ["CNY", "10000", "60", "9940"]
    assert client.request("GET", "/v1/bills/2026-13-01").json()["code"] == "INVALID_BILL_DATE"


def test_duplicate_and_late_callbacks_count_once(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    faults = running.sandbox("POST", "/sandbox/faults", {"duplicate_rate": 1.0, "delay_ms": 300})
    assert faults.status_code == 200, faults.text
    ids = []
    for _ in range(3):
        payment = client.create_payment(order(merchant)).json()
        pay(running, payment["code_url"])
        pay(running, payment["code_url"])  # the payer taps twice
        ids.append(payment["payment_id"])
    for payment_id in ids:
        wait_status(client, payment_id, "SUCCESS")

    def all_delivered_twice() -> bool:
        sent = running.sandbox("GET", "/sandbox/notifications").json()["notifications"]
        return sum(1 for n in sent if n["state"] == "DELIVERED" and not n["probe"]) >= 3

    wait_until(all_delivered_twice)
    db = running.database()

    def seen_callbacks() -> int:
        with db.transaction() as conn:
            return len(conn.execute(select(channel_callbacks)).all())

    wait_until(lambda: seen_callbacks() >= 3)
    time.sleep(1.0)  # let the duplicates land
    with db.transaction() as conn:
        captures = conn.execute(
            select(ledger_vouchers).where(ledger_vouchers.c.kind == "capture")
        ).all()
    db.dispose()
    assert sorted(v.business_ref for v in captures) == sorted(ids)
    wait_until(lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) == 3)
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr


def test_recovery_query_when_callbacks_never_come(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    """补单: the channel drops every callback; the scheduler's active query finds the money."""
    running = platform_factory(env={"PAYGRID_RECOVERY_AFTER_S": "1"})
    client = running.client()
    assert running.sandbox("POST", "/sandbox/faults", {"drop_rate": 1.0}).status_code == 200
    payment = client.create_payment(order(merchant)).json()
    pay(running, payment["code_url"])
    wait_status(client, payment["payment_id"], "SUCCESS", timeout=30)
    db = running.database()
    with db.transaction() as conn:
        causes = [
            r.cause
            for r in conn.execute(
                select(payment_transitions).where(
                    payment_transitions.c.payment_id == payment["payment_id"]
                )
            )
        ]
        callbacks = conn.execute(select(channel_callbacks)).all()
    db.dispose()
    assert causes[-1] == "recovery_query"
    assert callbacks == []
    wait_until(lambda: len(merchant.received) == 1)


def test_forged_callback_is_rejected_and_changes_nothing(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    assert running.sandbox("POST", "/sandbox/faults", {"drop_rate": 1.0}).status_code == 200
    payment = client.create_payment(order(merchant)).json()
    pay(running, payment["code_url"])
    # Capture what the sandbox would have sent, then tamper with it and replay it ourselves.
    import httpx

    forged = json.dumps(
        {
            "id": "fake",
            "create_time": "2026-01-01T00:00:00+08:00",
            "event_type": "TRANSACTION.SUCCESS",
            "resource_type": "encrypt-resource",
            "summary": "支付成功",
            "resource": {
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": "AAAA",
                "associated_data": "transaction",
                "nonce": "abcdefghijkl",
                "original_type": "transaction",
            },
        }
    ).encode()
    headers = {
        "Wechatpay-Timestamp": str(int(time.time())),
        "Wechatpay-Nonce": "n",
        "Wechatpay-Signature": "Zm9yZ2Vk",
        "Wechatpay-Serial": "PUB_KEY_ID_0",
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Content-Type": "application/json",
    }
    reply = httpx.post(f"{running.api_url}/callbacks/wechatpay", content=forged, headers=headers)
    assert reply.status_code == 401, reply.text  # unknown serial: the signature cannot verify
    assert reply.json()["code"] == "SIGN_ERROR"
    assert client.get_payment(payment["payment_id"]).json()["status"] == "PAYING"
    db = running.database()
    with db.transaction() as conn:
        assert conn.execute(select(channel_callbacks)).all() == []
    db.dispose()


def test_expired_payment_is_closed_at_the_channel_too(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    payment = client.create_payment(order(merchant)).json()
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from paygrid.storage.schema import payments

    db = running.database()
    with db.transaction() as conn:  # time passes: the order's expire_at is now behind us
        conn.execute(
            update(payments)
            .where(payments.c.payment_id == payment["payment_id"])
            .values(expire_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    db.dispose()
    closed = wait_status(client, payment["payment_id"], "CLOSED")
    assert closed["closed_at"]
    orders = running.sandbox("GET", "/sandbox/orders").json()["orders"]
    at_channel = next(o for o in orders if o["out_trade_no"] == payment["payment_id"])
    assert at_channel["trade_state"] == "CLOSED"
    late = running.sandbox(
        "POST", "/sandbox/pay", {"code_url": payment["code_url"], "outcome": "SUCCESS"}
    )
    assert late.status_code >= 400 or late.json()["transaction"]["trade_state"] == "CLOSED"
    assert client.get_payment(payment["payment_id"]).json()["status"] == "CLOSED"


def test_merchant_close_then_cashier_cannot_pay(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    payment = client.create_payment(order(merchant, channel=None, method="cashier")).json()
    assert payment["status"] == "CREATED" and "code_url" not in payment
    closed = client.close_payment(payment["payment_id"])
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    again = client.close_payment(payment["payment_id"])  # idempotent
    assert again.status_code == 200 and again.json() == closed.json()


def test_undecryptable_or_wrong_amount_callback_changes_nothing(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    import httpx

    running = platform_factory()
    client = running.client()
    payment = client.create_payment(order(merchant)).json()
    wx = running.sandbox("GET", "/sandbox/credentials").json()
    transaction = {
        "appid": wx["appid"],
        "mchid": wx["mchid"],
        "out_trade_no": payment["payment_id"],
        "transaction_id": "4200000000000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "success_time": "2026-11-27T10:00:00+08:00",
        "payer": {"openid": "o"},
        "amount": {
            "total": 10000,
            "payer_total": 10000,
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }
    # Signed correctly, but encrypted under another key: refused.
    body, headers = genuine_callback(running.data_dir, transaction, apiv3_key="x" * 32)
    reply = httpx.post(f"{running.api_url}/callbacks/wechatpay", content=body, headers=headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == "DECRYPT_ERROR"
    assert client.get_payment(payment["payment_id"]).json()["status"] == "PAYING"

    # Genuine, but for one fen: acknowledged (so the channel stops) and never applied.
    short = {**transaction, "amount": {**transaction["amount"], "total": 1, "payer_total": 1}}
    body, headers = genuine_callback(running.data_dir, short)
    reply = httpx.post(f"{running.api_url}/callbacks/wechatpay", content=body, headers=headers)
    assert reply.status_code == 204, reply.text
    assert client.get_payment(payment["payment_id"]).json()["status"] == "PAYING"
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 1 and "CALLBACK_ANOMALY" in check.stderr
    assert "AMOUNT_MISMATCH" in check.stderr


def test_channel_outage_then_retry_picks_up(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    assert running.sandbox("POST", "/sandbox/faults", {"error_rate": 1.0}).status_code == 200
    body = order(merchant)
    down = client.create_payment(body, idempotency_key="retry-me")
    assert down.status_code == 503 and down.json()["code"] == "CHANNEL_UNAVAILABLE"
    assert running.sandbox("DELETE", "/sandbox/faults").status_code == 200
    again = client.create_payment(body, idempotency_key="retry-me")
    assert again.status_code == 200, again.text  # the payment existed; now it has its order
    assert again.json()["status"] == "PAYING" and again.json()["code_url"]
    pay(running, again.json()["code_url"])
    wait_status(client, again.json()["payment_id"], "SUCCESS")
