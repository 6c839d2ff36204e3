"""Reconciliation end to end: payments and refunds through the channel sandbox, the bill and
the settlement with injected faults, `recon fetch`, `recon run`: exactly the injected
differences are found, each a case; the cases resolve (by rule, by a person with a voucher)
and the books still hold every money invariant. And a clean day with a refund reconciles
with nothing left over: the refund's channel fee returned is booked, so pending clearing nets
to exactly what the channel settled."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any

import httpx

from paygrid.kernel.money import rate_fee
from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid
from tests.integration.test_payment_flow import order, pay
from tests.integration.test_refunds import check_passes, refund, wait_refund
from tests.support import MerchantReceiver, RunningPlatform

AMOUNT = 10_000
REFUND = 3_000


def _refunded(running: RunningPlatform, payment: dict[str, Any]) -> dict[str, Any]:
    body = {
        "payment_id": payment["payment_id"],
        "out_refund_no": "rf-" + uuid.uuid4().hex[:12],
        "amount": REFUND,
    }
    created = refund(running.client(), body, key="k-" + uuid.uuid4().hex)
    assert created.status_code == 201, created.text
    return wait_refund(running.client(), created.json()["refund_id"], "SUCCESS")


def _close_and_fetch(running: RunningPlatform, day: date, faults: dict[str, Any]) -> None:
    running.sandbox("POST", "/sandbox/faults", faults)
    closed = running.sandbox("POST", "/sandbox/close-day", {"date": str(day)}).json()
    assert closed["settlement"]["status"] == "SETTLED", closed
    tomorrow = {"date": str(day + timedelta(days=1))}
    httpx.post(f"{running.bank_url}/sandbox/close-day", json=tomorrow).raise_for_status()
    for channel, on in (("wechatpay", day), ("bank", day + timedelta(days=1))):
        got = running.paygrid("recon", "fetch", "--channel", channel, "--date", str(on))
        assert got.returncode == 0, got.stderr


def _run(running: RunningPlatform, day: date, grace: int = 0) -> dict[str, Any]:
    done = running.paygrid(
        "recon", "run", "--date", str(day), "--channel", "wechatpay", "--json",
        "--grace-seconds", str(grace),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)["results"][0]
    return result


def _cases(running: RunningPlatform, day: date) -> dict[str, dict[str, Any]]:
    listed = running.paygrid("recon", "cases", "list", "--date", str(day), "--json")
    assert listed.returncode == 0, listed.stderr
    return {c["kind"]: c for c in json.loads(listed.stdout)}


def test_a_clean_day_with_a_refund_leaves_nothing_over(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    two = paid(running, merchant, 2)
    _refunded(running, two[0])
    check_passes(running)  # every voucher posted
    day = business_day(two[-1]["paid_at"])
    _close_and_fetch(running, day, {})
    result = _run(running, day)
    # settlement matched (posted), pending clearing moved by exactly the bill's net less what
    # arrived: no PENDING_CLEARING_MISMATCH although the channel returned part of its fee
    assert (result["differences"], result["held"]) == ([], [])
    assert result["matched"] == {"count": 3, "amount": 2 * AMOUNT - REFUND}
    check_passes(running)


def test_injected_faults_are_found_exactly_and_their_cases_resolve(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    three = paid(running, merchant, 3)
    _refunded(running, three[0])
    running.sandbox("POST", "/sandbox/faults", {"drop_rate": 1})  # its callback never comes
    lost = running.client().create_payment(order(merchant)).json()
    pay(running, lost["code_url"])
    running.sandbox("DELETE", "/sandbox/faults")
    check_passes(running)
    day = business_day(three[-1]["paid_at"])
    faults = {"extra_lines": 1, "seed": 11, "settlement": "short", "settlement_short_fen": 7}
    _close_and_fetch(running, day, faults)

    # the repair's voucher is on its way through the bus: within the grace, not missing
    result = _run(running, day, grace=60)
    kinds = sorted(d["kind"] for d in result["differences"])
    assert kinds == ["CHANNEL_ONLY", "SETTLEMENT_AMOUNT_MISMATCH", "STATUS_REPAIRED"]
    assert result["matched"] == {"count": 4, "amount": 3 * AMOUNT - REFUND}
    by_kind = {d["kind"]: d for d in result["differences"]}
    assert by_kind["STATUS_REPAIRED"]["payment_id"] == lost["payment_id"]
    short, extra = by_kind["SETTLEMENT_AMOUNT_MISMATCH"], by_kind["CHANNEL_ONLY"]["channel_amount"]
    # owed: the bill's net, the refund giving back 6 of its payment's fee of 20
    owed = 4 * AMOUNT + extra - REFUND - (4 * rate_fee(AMOUNT, 2000) + rate_fee(extra, 2000) - 6)
    assert short["paygrid_amount"] == owed
    # paid: the sandbox settles its real orders (the extra line is the bill's defect) less 7
    assert short["channel_amount"] == owed - (extra - rate_fee(extra, 2000)) - 7
    assert all(d["case_id"] for d in result["differences"])
    check_passes(running)  # the repaired payment's capture voucher is posted
    assert _run(running, day) == result  # again: the same differences, the same cases

    cases = _cases(running, day)
    assert sorted(cases) == kinds
    assert cases["STATUS_REPAIRED"]["resolution"] == "AUTO_RESOLVED"
    assert cases["SETTLEMENT_AMOUNT_MISMATCH"]["amount"] == short["channel_amount"] - owed
    longer = cases["CHANNEL_ONLY"]
    adjust = running.paygrid(
        "recon", "cases", "resolve", longer["case_id"], "--action", "adjust",
        "--reason", "order of another system, confirmed", "--by", "finance.li",
    )  # fmt: skip
    assert adjust.returncode == 0, adjust.stderr
    write_off = running.paygrid(
        "recon", "cases", "resolve", cases["SETTLEMENT_AMOUNT_MISMATCH"]["case_id"],
        "--action", "write-off", "--reason", "the channel will not pay it", "--by", "finance.li",
    )  # fmt: skip
    assert write_off.returncode == 0, write_off.stderr
    again = running.paygrid(
        "recon", "cases", "resolve", longer["case_id"], "--action", "adjust",
        "--reason", "twice", "--by", "finance.li",
    )  # fmt: skip
    assert again.returncode == 2 and "not OPEN" in again.stderr  # nothing is resolved twice

    after = _cases(running, day)
    assert {c["status"] for c in after.values()} == {"CLOSED"}
    steps = after["CHANNEL_ONLY"]["history"]
    assert [s["status"] for s in steps] == ["OPEN", "ADJUSTED", "CLOSED"]
    assert steps[1]["by"] == "finance.li" and steps[1]["voucher_id"]
    check_passes(running)  # the adjustment and write-off vouchers balance; nothing edited
