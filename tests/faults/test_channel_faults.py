"""Every channel fault at once — callbacks duplicated, delayed, reordered and dropped, API calls
failing and timing out — and every payment still ends in the state the channel holds, counted
once (补单 fills what the callbacks miss)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from paygrid.channels import registry
from tests.conftest import PlatformFactory
from tests.support import MerchantReceiver, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.serial]
PAYMENTS = 24


@dataclass(frozen=True)
class Expected:
    """What 24 payers leave behind at a channel (every fourth walks away, every eighth pays
    and fails, the others pay) and what paygrid must hold for each channel state."""

    at_channel: Counter[str]
    paygrid_of: dict[str, str]  # the channel's trade state -> the payment's status


EXPECTED = {
    "wechatpay": Expected(
        Counter({"SUCCESS": 15, "PAYERROR": 3, "NOTPAY": 6}),
        {"SUCCESS": "SUCCESS", "PAYERROR": "FAILED", "NOTPAY": "PAYING"},
    ),
    # Alipay: a failed attempt leaves the scanned trade waiting; an unscanned QR has no trade.
    "alipay": Expected(
        Counter({"TRADE_SUCCESS": 15, "WAIT_BUYER_PAY": 3, "UNSCANNED": 6}),
        {"TRADE_SUCCESS": "SUCCESS", "WAIT_BUYER_PAY": "PAYING", "UNSCANNED": "PAYING"},
    ),
    # UnionPay (QR consume): a declined card fails the consume for good; no notification for it.
    "unionpay": Expected(
        Counter({"PAID": 15, "FAILED": 3, "UNPAID": 6}),
        {"PAID": "SUCCESS", "FAILED": "FAILED", "UNPAID": "PAYING"},
    ),
    # NetsUnion (a gateway order at the payer's bank): failed at the bank's page is final.
    "netsunion": Expected(
        Counter({"SUCCESS": 15, "FAILED": 3, "PROCESSING": 6}),
        {"SUCCESS": "SUCCESS", "FAILED": "FAILED", "PROCESSING": "PAYING"},
    ),
}


@pytest.mark.parametrize("channel", registry.NAMES)
def test_all_channel_faults_converge(
    channel: str, platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    want = EXPECTED[channel]
    spec = registry.spec(channel)
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
    faulted = running.channel_sandbox(channel, "POST", "/sandbox/faults", faults)
    assert faulted.status_code == 200, faulted.text
    ids: list[str] = []
    for i in range(PAYMENTS):
        body = {
            "out_trade_no": f"f-{i}-{uuid.uuid4().hex[:6]}",
            "amount": {"total": 100 + i, "currency": "CNY"},
            "description": "faults",
            "notify_url": merchant.url,
            **spec.test_order(),
        }
        payment = None
        for _ in range(20):  # the merchant retries: same body, same Idempotency-Key
            r = client.create_payment(body, idempotency_key=body["out_trade_no"])
            if r.status_code in (200, 201) and spec.placed(r.json()):
                payment = r.json()
                break
            assert r.status_code in (409, 502, 503), r.text
            time.sleep(0.3)
        assert payment is not None, f"payment {i} never got its channel order"
        ids.append(payment["payment_id"])
        if i % 4 != 3:  # every fourth payer walks away
            outcome = "SUCCESS" if i % 8 else "FAIL"
            paid = httpx.post(
                f"{running.sandbox_urls[channel]}/sandbox/pay",
                timeout=10,
                json=spec.sandbox_pay(payment, outcome),
            )
            assert paid.status_code == 200, paid.text  # the payer really paid (or failed to)

    def channel_states() -> dict[str, str]:
        listed = running.channel_sandbox(channel, "GET", "/sandbox/orders?limit=1000")
        return {o["out_trade_no"]: o["trade_state"] for o in listed.json()["orders"]}

    expected = want.paygrid_of

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
    paid = [p for p, s in channel_states().items() if expected[s] == "SUCCESS"]
    # The count the payers make, not just agreement: 18 went to pay, 3 of them failed.
    assert Counter(channel_states().values()) == want.at_channel
    statuses = Counter(client.get_payment(p).json()["status"] for p in ids)
    assert statuses == Counter(expected[s] for s in want.at_channel.elements()), statuses
    wait_until(
        lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) == len(paid), timeout=60
    )
    check = running.paygrid("check", "--grace-seconds", "0")
    assert check.returncode == 0, check.stdout + check.stderr
