"""Refunds (退款) end to end through real processes and real HTTP, on every channel of the
registry and on SQLite and PostgreSQL: merchant API -> the channel's sandbox -> its signed
refund callback, or the refund's answer (or 补单 when the answer times out and the callback is
lost) -> the refund voucher with the fee returned pro rata -> the merchant's refund
notification; WeChat Pay's ABNORMAL and CLOSED refunds; `paygrid check` on all of it."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from paygrid.api.client import MerchantClient, verify_notification
from paygrid.channels import registry
from paygrid.storage.schema import ledger_entries, ledger_vouchers, refund_callbacks
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, wait_status
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(240)


def paid(
    running: RunningPlatform, merchant: MerchantReceiver, channel: str = "wechatpay"
) -> dict[str, Any]:
    """A payment of 100.00 (two apples, a 10.00 coupon) on ``channel``, paid by scanning its
    QR code at the channel's sandbox, its notification received."""
    client = running.client()
    spec = registry.spec(channel)
    payment = client.create_payment(order(merchant, **spec.test_order())).json()
    body = spec.sandbox_pay(payment, "SUCCESS")
    answer = running.channel_sandbox(channel, "POST", "/sandbox/pay", body)
    assert answer.status_code == 200, answer.text
    done = wait_status(client, payment["payment_id"], "SUCCESS")
    wait_until(lambda: any(b'"payment.succeeded"' in body for _, body in merchant.received))
    return done


def refund(client: MerchantClient, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    return client.request("POST", "/v1/refunds", body, headers)


def wait_refund(
    client: MerchantClient, refund_id: str, status: str, timeout: float = 30.0
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(client.request("GET", f"/v1/refunds/{refund_id}").json())
        return seen.get("status") == status

    wait_until(done, timeout)
    return seen


def notices(merchant: MerchantReceiver, kind: str) -> list[tuple[dict[str, str], bytes]]:
    return [(h, b) for h, b in merchant.received if json.loads(b)["type"] == kind]


def check_passes(running: RunningPlatform) -> None:
    wait_until(
        lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0,
        timeout=60,
        interval=1.0,
    )


@pytest.mark.parametrize("channel", registry.NAMES)
def test_full_and_partial_refunds_end_to_end(
    platform_factory: PlatformFactory,
    database_url: str | None,
    merchant: MerchantReceiver,
    channel: str,
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    secret = running.credentials["secret"]
    payment = paid(running, merchant, channel)
    own = MerchantReceiver()
    try:
        body = {
            "payment_id": payment["payment_id"],
            "out_refund_no": "rf-" + uuid.uuid4().hex[:12],
            "amount": 3_000,
            "reason": "一个苹果坏了 one bad apple",
            "notify_url": own.url,
            "items": [{"sku": "APL", "quantity": 1}],
        }
        created = refund(client, body, key="k-" + uuid.uuid4().hex)
        assert created.status_code == 201, created.text
        first = created.json()
        # WeChat Pay answers PROCESSING (its callback follows), Alipay SUCCESS at once
        assert first["status"] in ("PROCESSING", "SUCCESS") and first["refund_id"].startswith(
            "rfd_"
        )
        assert (first["amount"], first["currency"], first["channel"]) == (3_000, "CNY", channel)
        assert first["items"] == [{"sku": "APL", "quantity": 1}]
        assert first["out_trade_no"] == payment["out_trade_no"]
        again = refund(client, body)
        assert (again.status_code, again.json()["refund_id"]) == (200, first["refund_id"])
        other = refund(client, {**body, "amount": 3_001})
        assert (other.status_code, other.json()["code"]) == (409, "DUPLICATE_OUT_REFUND_NO")

        done = wait_refund(client, first["refund_id"], "SUCCESS")
        assert done["succeeded_at"] and done["channel_status"]  # (Alipay has no refund number)
        wait_until(lambda: len(own.received) == 1)
        headers, raw = own.received[0]
        assert verify_notification(secret, headers, raw)
        told = json.loads(raw)
        assert (
            told["type"] == "refund.succeeded" and told["data"]["refund_id"] == first["refund_id"]
        )
        assert told["data"]["status"] == "SUCCESS"

        rest = {
            "out_trade_no": payment["out_trade_no"],
            "out_refund_no": "rf-" + uuid.uuid4().hex[:12],
            "amount": 7_001,
        }
        over = refund(client, rest)
        assert (over.status_code, over.json()["code"]) == (409, "REFUND_EXCEEDS_REMAINING")
        last = refund(client, {**rest, "amount": 7_000})
        assert last.status_code == 201, last.text
        wait_refund(client, last.json()["refund_id"], "SUCCESS")
        found = client.request("GET", f"/v1/refunds?out_refund_no={rest['out_refund_no']}")
        assert (found.status_code, found.json()["refund_id"]) == (200, last.json()["refund_id"])
        wait_until(lambda: len(notices(merchant, "refund.succeeded")) == 1)  # the payment's url
        assert len(own.received) == 1

        whole = client.get_payment(payment["payment_id"]).json()
        assert whole["refunded_amount"] == 10_000
        assert [(r["amount"], r["status"]) for r in whole["refunds"]] == [
            (3_000, "SUCCESS"),
            (7_000, "SUCCESS"),
        ]
        none_left = refund(client, {**rest, "out_refund_no": "rf-none", "amount": 1})
        assert none_left.json()["code"] == "REFUND_EXCEEDS_REMAINING"
        missing = client.request("GET", "/v1/refunds/rfd_" + "0" * 26)
        assert (missing.status_code, missing.json()["code"]) == (404, "REFUND_NOT_FOUND")

        db = running.database()
        try:
            wait_until(lambda: len(_fees(db, payment["payment_id"])) == 3)
            # 0.60 % of 100.00 = 60 fen charged; 30 % of it back, then the rest: 18 + 42
            assert _fees(db, payment["payment_id"]) == [
                ("capture", "C", 60),
                ("refund", "D", 18),
                ("refund", "D", 42),
            ]
            with db.read() as conn:
                said = set(conn.execute(select(refund_callbacks.c.outcome)).scalars())
            assert said <= {"APPLY_SUCCESS", "NO_CHANGE", "STALE"}  # no callback refused
        finally:
            db.dispose()
        check_passes(running)
        _bill_shows_refunds(client, payment, whole["refunds"], [first, last.json()])
    finally:
        own.close()


def _bill_shows_refunds(
    client: MerchantClient,
    payment: dict[str, Any],
    listed: list[dict[str, Any]],
    made: list[dict[str, Any]],
) -> None:
    """The merchant's daily bill: the payment, then each refund at its success time (in the
    business zone), negative, with the fee it gave back: 18 then the rest, 42."""
    zone = ZoneInfo("Asia/Shanghai")
    refunds = [client.request("GET", f"/v1/refunds/{r['refund_id']}").json() for r in made]
    assert [r["refund_id"] for r in refunds] == [r["refund_id"] for r in listed]
    moments = [payment["paid_at"]] + [r["succeeded_at"] for r in refunds]
    lines: list[dict[str, str]] = []
    for day in sorted({datetime.fromisoformat(m).astimezone(zone).date() for m in moments}):
        bill = client.request("GET", f"/v1/bills/{day.isoformat()}")
        assert bill.status_code == 200, bill.text
        rows = list(csv.DictReader(io.StringIO(bill.text)))
        lines += [row for row in rows if row["payment_id"] == payment["payment_id"]]
    shown = [
        (r["type"], r["amount"], r["fee"], r["net"], r["refund_id"], r["out_refund_no"])
        for r in lines
    ]
    assert shown == [
        ("PAYMENT", "10000", "60", "9940", "", ""),
        ("REFUND", "-3000", "-18", "-2982", refunds[0]["refund_id"], refunds[0]["out_refund_no"]),
        ("REFUND", "-7000", "-42", "-6958", refunds[1]["refund_id"], refunds[1]["out_refund_no"]),
    ]
    for line, refund in zip(lines[1:], refunds, strict=True):
        at = datetime.fromisoformat(refund["succeeded_at"]).astimezone(zone)
        assert line["paid_at"] == at.strftime("%Y-%m-%d %H:%M:%S")
        assert line["channel"] == refund["channel"] and line["currency"] == "CNY"


def _fees(db: Any, payment_id: str) -> list[tuple[str, str, int]]:
    with db.read() as conn:
        rows = conn.execute(
            select(ledger_vouchers.c.kind, ledger_entries.c.direction, ledger_entries.c.amount)
            .join(ledger_entries, ledger_entries.c.voucher_id == ledger_vouchers.c.voucher_id)
            .where(
                (ledger_vouchers.c.business_ref == payment_id)
                | (ledger_vouchers.c.parent_ref == payment_id),
                ledger_entries.c.account_code == "fee_income:CNY",
            )
            .order_by(ledger_vouchers.c.created_at)
        ).all()
    return [(r.kind, r.direction, r.amount) for r in rows]


@pytest.mark.parametrize("channel", registry.NAMES)
def test_refund_recovery_when_the_answer_times_out_and_the_callback_is_lost(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, channel: str
) -> None:
    running = platform_factory(env={"PAYGRID_RECOVERY_AFTER_S": "1"})
    client = running.client()
    payment = paid(running, merchant, channel)

    def faults(changes: dict[str, Any]) -> None:
        assert running.channel_sandbox(channel, "POST", "/sandbox/faults", changes).is_success

    faults({"drop_rate": 1, "timeout_rate": 1})  # the channel refunds; nobody hears of it
    body = {"payment_id": payment["payment_id"], "out_refund_no": "rf-lost", "amount": 2_500}
    made = refund(client, body)
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "PROCESSING"  # written down; the channel's word is late
    faults({"timeout_rate": 0})  # queries are answered again; callbacks still lost
    done = wait_refund(client, made.json()["refund_id"], "SUCCESS", timeout=60)  # by 补单
    assert done["succeeded_at"]
    wait_until(lambda: len(notices(merchant, "refund.succeeded")) == 1)
    assert client.get_payment(payment["payment_id"]).json()["refunded_amount"] == 2_500
    db = running.database()
    try:
        with db.read() as conn:
            assert conn.execute(select(refund_callbacks)).all() == []  # no callback came
    finally:
        db.dispose()
    check_passes(running)


def test_wechatpay_abnormal_refunds_stay_reserved_and_closed_ones_release(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    payment = paid(running, merchant)
    running.sandbox("POST", "/sandbox/faults", {"refund_abnormal_rate": 1})
    base = {"payment_id": payment["payment_id"]}
    held = refund(client, {**base, "out_refund_no": "rf-abn", "amount": 4_000}).json()

    def abnormal() -> bool:
        shown = client.request("GET", f"/v1/refunds/{held['refund_id']}").json()
        return bool(shown["channel_status"] == "ABNORMAL")

    wait_until(abnormal)
    shown = client.request("GET", f"/v1/refunds/{held['refund_id']}").json()
    assert shown["status"] == "PROCESSING"  # the money is held at the channel: still reserved
    too_much = refund(client, {**base, "out_refund_no": "rf-x", "amount": 6_001})
    assert too_much.json()["code"] == "REFUND_EXCEEDS_REMAINING"
    listed = running.paygrid("check", "--grace-seconds", "0")
    said = listed.stdout + listed.stderr
    assert listed.returncode != 0
    assert "REFUND_PROCESSING" in said and "says ABNORMAL" in said, said

    running.sandbox("POST", "/sandbox/faults", {"refund_abnormal_rate": 0, "refund_closed_rate": 1})
    closed = refund(client, {**base, "out_refund_no": "rf-closed", "amount": 6_000}).json()
    failed = wait_refund(client, closed["refund_id"], "FAILED")
    assert failed["channel_status"] == "CLOSED" and failed["failed_at"]
    wait_until(lambda: len(notices(merchant, "refund.failed")) == 1)
    data = json.loads(notices(merchant, "refund.failed")[0][1])["data"]
    assert data["refund_id"] == closed["refund_id"] and data["status"] == "FAILED"
    running.sandbox("DELETE", "/sandbox/faults")
    again = refund(client, {**base, "out_refund_no": "rf-again", "amount": 6_000})
    assert again.status_code == 201, again.text  # the closed refund's amount is free again
    wait_refund(client, again.json()["refund_id"], "SUCCESS")
    after = client.get_payment(payment["payment_id"]).json()
    assert after["refunded_amount"] == 6_000
    statuses = {r["out_refund_no"]: r["status"] for r in after["refunds"]}
    assert statuses == {"rf-abn": "PROCESSING", "rf-closed": "FAILED", "rf-again": "SUCCESS"}
