"""Merchant notifications: retries on the schedule, the stable id, list and resend; and the
CLI's commands against a running platform."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from paygrid.api.client import verify_notification
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, wait_until

pytestmark = pytest.mark.timeout(180)


def test_notification_retried_until_acknowledged_then_resent(
    platform_factory: PlatformFactory, database_url: str | None
) -> None:
    # The schedule scaled down 100x: 15 s -> 0.15 s.
    running = platform_factory(database_url, env={"PAYGRID_NOTIFY_RETRY_SCALE": "0.01"})
    client = running.client()
    merchant = MerchantReceiver(fail_first=2)
    try:
        payment = client.create_payment(order(merchant)).json()
        pay(running, payment["code_url"])
        wait_status(client, payment["payment_id"], "SUCCESS")
        wait_until(lambda: len(merchant.received) >= 3, timeout=30)
        ids = {h["Paygrid-Notify-Id"] for h, _ in merchant.received}
        assert len(ids) == 1  # the same notification, retried
        bodies = {b for _, b in merchant.received}
        assert len(bodies) == 1  # byte-identical body on every retry
        secret = running.credentials["secret"]
        assert all(verify_notification(secret, h, b) for h, b in merchant.received)

        # The receiver answers before the notifier records the attempt: wait for the record.
        def listed() -> list[dict[str, Any]]:
            data: list[dict[str, Any]] = client.notifications(payment["payment_id"]).json()["data"]
            return data

        wait_until(lambda: listed()[0]["status"] == "DELIVERED", timeout=30)
        assert len(listed()) == 1
        note = listed()[0]
        assert note["status"] == "DELIVERED" and note["attempts"] == 3
        assert [d["http_status"] for d in note["deliveries"]] == [500, 500, 200]

        resent = client.resend(note["id"])
        assert resent.status_code == 200, resent.text
        assert resent.json()["attempts"] == 4
        assert resent.json()["deliveries"][-1]["manual"] is True
        assert len(merchant.received) == 4
        assert merchant.received[-1][0]["Paygrid-Notify-Id"] == note["id"]
        assert client.resend("ntf_nope").status_code == 404

        cli = running.paygrid("notifications", "resend", note["id"])
        assert cli.returncode == 0, cli.stderr
        assert len(merchant.received) == 5
    finally:
        merchant.close()


def test_notification_gives_up_after_the_schedule(platform_factory: PlatformFactory) -> None:
    running = platform_factory(env={"PAYGRID_NOTIFY_RETRY_SCALE": "0.0002"})
    client = running.client()
    merchant = MerchantReceiver(fail_first=10_000)
    try:
        payment = client.create_payment(order(merchant)).json()
        pay(running, payment["code_url"])

        def failed() -> bool:
            data = client.notifications(payment["payment_id"]).json()["data"]
            return bool(data) and data[0]["status"] == "FAILED"

        wait_until(failed, timeout=60)
        note = client.notifications(payment["payment_id"]).json()["data"][0]
        assert note["attempts"] == 16 and note["next_attempt_at"] is None
    finally:
        merchant.close()


def test_cli_sandbox_credentials_and_check(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    creds = running.paygrid(
        "sandbox", "credentials", "wechatpay", "--json", "--url", running.sandbox_url
    )
    assert creds.returncode == 0, creds.stderr
    data = json.loads(creds.stdout)
    assert {
        "mchid",
        "appid",
        "private_key",
        "cert_serial_no",
        "apiv3_key",
        "public_key",
        "public_key_id",
    } <= set(data)
    assert data["public_key_id"].startswith("PUB_KEY_ID_")
    assert "BEGIN PRIVATE KEY" in data["private_key"] and len(data["apiv3_key"]) == 32

    client = running.client()
    payment = client.create_payment(order(merchant)).json()
    pay(running, payment["code_url"])
    wait_status(client, payment["payment_id"], "SUCCESS")
    wait_until(lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0)

    # Someone edits the books by hand: check names each broken invariant and exits 1.
    db = sqlite3.connect(running.data_dir / "paygrid.db")
    db.execute(
        "UPDATE ledger_entries SET amount = amount + 1 WHERE direction = 'D' AND "
        "account_code LIKE 'pending_clearing:%'"
    )
    db.commit()
    db.close()
    broken = running.paygrid("check", "--grace-seconds", "0")
    assert broken.returncode == 1
    for code in (
        "UNBALANCED_VOUCHER",
        "TRIAL_BALANCE",
        "BALANCE_MISMATCH",
        "CAPTURE_AMOUNT_MISMATCH",
    ):
        assert code in broken.stderr, broken.stderr
