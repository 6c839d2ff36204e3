"""Every channel fault at once — callbacks duplicated, delayed, reordered and dropped, API calls
failing and timing out — and every payment still ends in the state the channel holds, counted
once (补单 fills what the callbacks miss)."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.conftest import PlatformFactory
from tests.support import MerchantReceiver, wait_until

pytestmark = pytest.mark.timeout(300)
PAYMENTS = 24
# Every fourth payer walks away, every eighth pays and fails, the others pay.
EXPECTED_AT_CHANNEL = Counter({"SUCCESS": 15, "PAYERROR": 3, "NOTPAY": 6})


def test_all_channel_faults_converge(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory(env={"PAYGRID_RECOVERY_AFTER_S": "1"})
    client = running.client()
    faults = {
        "duplicate_rate": 0.3,
        "delay_ms": 300,
        "reorder": True,
        "drop_rate": 0.25,
        "error_rate": 0.15,
        "timeout_rate": 0.05,
        "timeout_ms": 6000,
        "seed": 7,
    }
    assert running.sandbox("POST", "/sandbox/faults", faults).status_code == 200
    ids: list[str] = []
    for i in range(PAYMENTS):
        body = {
            "out_trade_no": f"f-{i}-{uuid.uuid4().hex[:6]}",
            "amount": {"total": 100 + i, "currency": "CNY"},
            "description": "faults",
            "notify_url": merchant.url,
            "channel": "wechatpay",
            "method": "native",
        }
        payment = None
        for _ in range(20):  # the merchant retries: same body, same Idempotency-Key
            r = client.create_payment(body, idempotency_key=body["out_trade_no"])
            if r.status_code in (200, 201) and "code_url" in r.json():
                payment = r.json()
                break
            assert r.status_code in (409, 502, 503), r.text
            time.sleep(0.3)
        assert payment is not None, f"payment {i} never got its channel order"
        ids.append(payment["payment_id"])
        if i % 4 != 3:  # every fourth payer walks away
            outcome = "SUCCESS" if i % 8 else "FAIL"
            paid = httpx.post(
                f"{running.sandbox_url}/sandbox/pay",
                timeout=10,
                json={"code_url": payment["code_url"], "outcome": outcome},
            )
            assert paid.status_code == 200, paid.text  # the payer really paid (or failed to)

    def channel_states() -> dict[str, str]:
        orders = running.sandbox("GET", "/sandbox/orders?limit=1000").json()["orders"]
        return {o["out_trade_no"]: o["trade_state"] for o in orders}

    expected = {"SUCCESS": "SUCCESS", "PAYERROR": "FAILED", "NOTPAY": "PAYING"}

    def converged() -> bool:
        states = channel_states()
        for payment_id in ids:
            got = client.get_payment(payment_id)
            if got.status_code != 200:
                return False
            if got.json()["status"] != expected[states[payment_id]]:
                return False
        return True

    wait_until(converged, timeout=120, interval=1.0)
    paid = [p for p, s in channel_states().items() if s == "SUCCESS"]
    # The count the payers make, not just agreement: 18 went to pay, 3 of them failed.
    assert Counter(channel_states().values()) == EXPECTED_AT_CHANNEL
    statuses = Counter(client.get_payment(p).json()["status"] for p in ids)
    assert statuses == {"SUCCESS": 15, "FAILED": 3, "PAYING": 6}, statuses
    wait_until(
        lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) == len(paid), timeout=60
    )
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr
