"""UnionPay payments end to end through real processes and real HTTP: `paygrid up` with the
UnionPay sandbox as its own process; merchant API -> the signed front consume form -> the
payer's browser posts it to frontTransReq.do -> the sandbox's pay page -> paid -> the signed
back notification to /callbacks/unionpay (answered 200) and the browser's post back to
frontUrl -> ledger -> merchant notification; refunds (04); close and expiry; 补单; the day's
ZM file through the file transfer into `paygrid recon fetch` / `run`."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from paygrid.storage.schema import ledger_entries, ledger_vouchers, payments
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, wait_status
from tests.integration.test_refunds import wait_refund
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(240)
CHANNEL = "unionpay"
BEIJING = "Asia/Shanghai"


def sandbox(running: RunningPlatform, method: str, path: str, body: object = None) -> Any:
    answer = running.channel_sandbox(CHANNEL, method, path, body)
    assert answer.status_code < 500, answer.text
    return answer


def at_unionpay(running: RunningPlatform, payment_id: str) -> dict[str, Any]:
    orders = sandbox(running, "GET", "/sandbox/orders?limit=1000").json()["orders"]
    found: dict[str, Any] = next(o for o in orders if o["out_trade_no"] == payment_id)
    return found


def test_front_consume_form_paid_refunded_and_reconciled(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    back = "https://shop.example/unionpay/return"
    body = order(merchant, channel=CHANNEL, method="page", return_url=back, items=None,
                 discounts=None, amount={"total": 10_000, "currency": "CNY"})  # fmt: skip
    created = client.create_payment(body)
    assert created.status_code == 201, created.text
    payment = created.json()
    action = payment["payer_action"]
    assert action["kind"] == "form" and "code_url" not in payment
    assert action["url"] == running.sandbox_urls[CHANNEL] + "/gateway/api/frontTransReq.do"
    fields = action["fields"]
    assert (fields["txnType"], fields["channelType"], fields["txnAmt"]) == ("01", "07", "10000")
    assert fields["frontUrl"] == back and fields["signMethod"] == "01"
    assert fields["backUrl"] == running.api_url + "/callbacks/unionpay"

    with httpx.Client(follow_redirects=True, timeout=10.0) as browser:
        page = browser.post(action["url"], data=fields)  # the payer's browser posts the form
        assert page.status_code == 200 and "/sandbox/cashier/" in str(page.url)
        token = page.url.path.rsplit("/", 1)[-1]
        paid_page = browser.post(
            running.sandbox_urls[CHANNEL] + "/sandbox/pay",
            data={"token": token, "outcome": "SUCCESS"},
        )
    assert 'id="front-post"' in paid_page.text and f'action="{back}"' in paid_page.text
    paid = wait_status(client, payment["payment_id"], "SUCCESS")
    assert len(paid["channel_trade_no"]) == 21
    sent = sandbox(running, "GET", "/sandbox/notifications").json()["notifications"]
    mine = [n for n in sent if n["txn_type"] == "01" and n["query_id"] == paid["channel_trade_no"]]
    assert [(n["state"], n["last_status"]) for n in mine] == [("DELIVERED", 200)]
    wait_until(lambda: any(b'"payment.succeeded"' in b for _, b in merchant.received))

    db = running.database()
    with db.transaction() as conn:
        [voucher] = conn.execute(
            select(ledger_vouchers).where(ledger_vouchers.c.business_ref == paid["payment_id"])
        ).all()
        entries = conn.execute(
            select(ledger_entries).where(ledger_entries.c.voucher_id == voucher.voucher_id)
        ).all()
    db.dispose()
    costs = {(e.account_code, e.direction, e.amount) for e in entries}
    assert ("channel_cost:unionpay:CNY", "D", 50) in costs  # 0.50 %

    refund = client.request(
        "POST", "/v1/refunds",
        {"payment_id": paid["payment_id"], "out_refund_no": "r-1", "amount": 3_000},
    ).json()  # fmt: skip
    done = wait_refund(client, refund["refund_id"], "SUCCESS")
    assert done["amount"] == 3_000

    day = datetime.now(ZoneInfo(BEIJING)).date()
    closed = sandbox(running, "POST", "/sandbox/close-day", {"date": day.isoformat()})
    assert closed.status_code == 200, closed.text
    fetched = running.paygrid("recon", "fetch", "--channel", CHANNEL, "--date", str(day))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    run = running.paygrid(
        "recon", "run", "--date", str(day), "--channel", CHANNEL, "--json",
        "--grace-seconds", "0",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    [result] = json.loads(run.stdout)["results"]
    assert result["matched"] == {"count": 2, "amount": 7_000}, result
    assert [d["kind"] for d in result["differences"]] == [], result
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr


def test_close_expiry_and_recovery_query(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory(env={"PAYGRID_RECOVERY_AFTER_S": "1"})
    client = running.client()
    native = {"channel": CHANNEL, "method": "native"}

    # 补单: every notification dropped; the scheduler's query finds the money (34 before).
    assert sandbox(running, "POST", "/sandbox/faults", {"drop_rate": 1.0}).status_code == 200
    dropped = client.create_payment(order(merchant, **native)).json()
    assert dropped["code_url"].startswith(running.sandbox_urls[CHANNEL] + "/sandbox/qr/")
    time.sleep(2.5)  # 补单 rounds while UnionPay has nothing paid: still PAYING, never failed
    assert client.get_payment(dropped["payment_id"]).json()["status"] == "PAYING"
    pay = {"qrCode": dropped["code_url"], "outcome": "SUCCESS"}
    assert sandbox(running, "POST", "/sandbox/pay", pay).status_code == 200
    wait_status(client, dropped["payment_id"], "SUCCESS", timeout=30)
    refused = client.close_payment(dropped["payment_id"])
    assert (refused.status_code, refused.json()["code"]) == (409, "PAYMENT_ALREADY_PAID")
    sandbox(running, "DELETE", "/sandbox/faults")

    # Closed by the merchant before anything is paid: CLOSED (docs/unionpay.md: what it means).
    unpaid = client.create_payment(order(merchant, **native)).json()
    closed = client.close_payment(unpaid["payment_id"])
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"

    # Expiry: past expire_at (= payTimeout) paygrid closes it and UnionPay takes no payment.
    expiring = client.create_payment(order(merchant, **native)).json()
    past = datetime.now(UTC) - timedelta(seconds=1)
    store = running.data_dir / "sandbox" / CHANNEL / "unionpay-sandbox.sqlite3"
    with sqlite3.connect(store) as sandbox_db:  # time passes at UnionPay: payTimeout is behind
        sandbox_db.execute("UPDATE consumes SET pay_timeout = ?", (past.timestamp(),))
    db = running.database()
    with db.transaction() as conn:  # ... and at paygrid: expire_at is behind us
        conn.execute(
            update(payments)
            .where(payments.c.payment_id == expiring["payment_id"])
            .values(expire_at=past)
        )
    db.dispose()
    assert wait_status(client, expiring["payment_id"], "CLOSED")["closed_at"]
    late = sandbox(running, "POST", "/sandbox/pay",
                   {"qrCode": expiring["code_url"], "outcome": "SUCCESS"})  # fmt: skip
    assert (late.status_code, late.json()["code"]) == (409, "PAY_TIMEOUT")
    assert at_unionpay(running, expiring["payment_id"])["trade_state"] == "EXPIRED"
