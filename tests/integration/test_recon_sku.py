"""Per-SKU reconciliation (按商品对账) against a running platform: payments with items and
discounts (and one without items) of two merchants and a partial refund naming an item go
through the channel's sandbox; its bill (with a line paygrid never had, 长款) is fetched; then
`paygrid recon sku --json` gives each merchant's figures per SKU, adding up exactly to what the
bill confirmed for that merchant, and with the unattributed line to the bill's totals; and
`GET /v1/reports/sku/{date}` gives each merchant the same figures, its own SKUs only."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from paygrid.api.client import MerchantClient
from paygrid.channels import registry
from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.integration.test_refunds import refund, wait_refund
from tests.support import MerchantReceiver, RunningPlatform

pytestmark = pytest.mark.timeout(240)
FIGURES = ("quantity", "sales", "discount", "paid", "refund_quantity", "refund", "fee", "net")


def _paid(client: MerchantClient, running: RunningPlatform, body: dict[str, Any]) -> str:
    created = client.create_payment(body)
    assert created.status_code == 201, created.text
    payment = created.json()
    pay(running, payment["code_url"])
    return str(wait_status(client, payment["payment_id"], "SUCCESS")["paid_at"])


def _second_merchant(running: RunningPlatform) -> MerchantClient:
    created = running.paygrid("merchant", "create", "--name", "Fruit Stall", "--json")
    assert created.returncode == 0, created.stderr
    m = json.loads(created.stdout)
    return MerchantClient(running.api_url, m["mchid"], m["key_id"], m["secret"])


def _sku_json(running: RunningPlatform, day: str, *extra: str) -> dict[str, Any]:
    done = running.paygrid("recon", "sku", "--date", day, "--json", *extra)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _adds_up(merchant: dict[str, Any]) -> None:
    """The merchant's SKUs add up exactly to its channel-confirmed totals."""
    skus, confirmed = merchant["skus"], merchant["confirmed"]
    assert sum(s["paid"] for s in skus) == confirmed["payments"]["amount"]
    assert sum(s["refund"] for s in skus) == confirmed["refunds"]["amount"]
    assert sum(s["fee"] for s in skus) == confirmed["fee"]
    assert sum(s["net"] for s in skus) == confirmed["net"]
    for s in skus:
        assert s["net"] == s["paid"] - s["refund"] - s["fee"]


def test_per_sku_figures_add_up_to_the_bill_for_each_merchant_and_only_its_own(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    ours, theirs = running.client(), _second_merchant(running)
    cart = [
        {"sku": "APL", "name": "苹果", "quantity": 2, "unit_amount": 5500},
        {"sku": "PEAR", "name": "梨", "quantity": 3, "unit_amount": 1000},
    ]
    two_lines = order(merchant, amount={"total": 13_000, "currency": "CNY"}, items=cart)
    paid_at = _paid(ours, running, two_lines)
    _paid(ours, running, order(merchant))  # 2 × APL at 55.00, a 10.00 coupon: 100.00
    no_items = order(merchant)
    del no_items["items"], no_items["discounts"]
    _paid(ours, running, no_items)
    one_apple = order(
        merchant,
        amount={"total": 5_000, "currency": "CNY"},
        items=[{"sku": "APL", "name": "苹果", "quantity": 1, "unit_amount": 5000}],
        discounts=[],
    )
    _paid(theirs, running, one_apple)
    back = {
        "out_trade_no": two_lines["out_trade_no"],
        "out_refund_no": "rf-" + uuid.uuid4().hex[:12],
        "amount": 900,
        "items": [{"sku": "PEAR", "quantity": 1}],
    }
    created = refund(ours, back)
    assert created.status_code == 201, created.text
    wait_refund(ours, created.json()["refund_id"], "SUCCESS")

    day = str(business_day(paid_at))
    running.sandbox("POST", "/sandbox/close-day", {"date": day})
    running.sandbox("POST", "/sandbox/faults", {"extra_lines": 1, "seed": 5})  # a 长款 line
    fetched = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day, "--json")
    assert fetched.returncode == 0, fetched.stderr
    bill = json.loads(fetched.stdout)

    report = _sku_json(running, day)
    assert report["date"] == day and report["channels"] == ["wechatpay"]
    assert report["missing"] == [n for n in registry.NAMES if n != "wechatpay"]
    by_mchid = {m["mchid"]: m for m in report["merchants"]}
    assert set(by_mchid) == {ours.mchid, theirs.mchid}
    for m in by_mchid.values():
        _adds_up(m)
    # the merchants' lines and the one paygrid never had are the whole bill, to the fen
    unattributed = report["unattributed"]
    assert unattributed["payments"]["count"] == 1 and unattributed["refunds"]["count"] == 0
    for key in ("payments", "refunds"):
        for part in ("count", "amount"):
            total = sum(m["confirmed"][key][part] for m in by_mchid.values())
            assert total + unattributed[key][part] == bill[key][part], (key, part)
    fees = sum(m["confirmed"]["fee"] for m in by_mchid.values())
    assert fees + unattributed["fee"] == bill["fee"]
    [channel_bill] = report["bills"]
    assert channel_bill["totals"]["fee"] == bill["fee"]

    mine = {s["sku"]: s for s in by_mchid[ours.mchid]["skus"]}
    assert sorted(mine) == ["-", "APL", "PEAR"]
    # the 10.00 coupon of the two-line order splits 7.86 / 2.14 by list value (110.00 / 30.00)
    apl, pear, whole = mine["APL"], mine["PEAR"], mine["-"]
    assert (apl["quantity"], apl["sales"], apl["discount"], apl["paid"]) == (
        4,
        22_000,
        1_786,
        20_214,
    )
    assert (pear["quantity"], pear["sales"], pear["discount"], pear["paid"]) == (
        3,
        3_000,
        214,
        2_786,
    )
    assert (pear["refund_quantity"], pear["refund"]) == (1, 900)  # the refund named the pear
    assert (apl["refund_quantity"], apl["refund"], whole["refund"]) == (0, 0, 0)
    assert (whole["quantity"], whole["sales"], whole["discount"], whole["paid"]) == (
        1,
        10_000,
        0,
        10_000,
    )
    # the channel's fee (0.20 %): 26 on 130.00 split 20 / 6 (20.43 / 5.57: the pear's larger
    # remainder gets the last fen), 20 on each 100.00; the refund gives back part of the pear's
    assert (apl["fee"], whole["fee"]) == (20 + 20, 20)
    assert pear["fee"] == 6 + by_mchid[ours.mchid]["confirmed"]["fee"] - (26 + 20 + 20)
    assert pear["fee"] < 6
    [their_apple] = by_mchid[theirs.mchid]["skus"]
    assert (their_apple["sku"], their_apple["quantity"], their_apple["paid"]) == ("APL", 1, 5_000)

    only = _sku_json(running, day, "--mchid", theirs.mchid)
    assert [m["mchid"] for m in only["merchants"]] == [theirs.mchid]
    assert only["merchants"][0] == by_mchid[theirs.mchid] and only["unattributed"] is None

    for client in (ours, theirs):
        answer = client.request("GET", f"/v1/reports/sku/{day}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/csv")
        assert answer.headers["Paygrid-Report-Complete"] == "false"  # no alipay bill
        assert answer.headers["Paygrid-Report-Channels"] == "wechatpay"
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        expected = by_mchid[client.mchid]["skus"]
        assert [r["sku"] for r in rows] == [s["sku"] for s in expected]  # only its own SKUs
        for row, sku in zip(rows, expected, strict=True):
            assert row["business_date"] == day
            assert {k: int(row[k]) for k in FIGURES} == {k: sku[k] for k in FIGURES}


def test_the_refusals_of_the_command_and_the_report(
    platform_factory: PlatformFactory,
) -> None:
    running = platform_factory()
    client = running.client()
    no_bill = running.paygrid("recon", "sku", "--date", "2026-11-01")
    assert no_bill.returncode == 2 and "recon fetch" in no_bill.stderr, no_bill.stderr
    bad = running.paygrid("recon", "sku", "--date", "2026-13-01")
    assert bad.returncode == 2 and "--date" in bad.stderr
    nobody = running.paygrid("recon", "sku", "--date", "2026-11-01", "--mchid", "m0000000000")
    assert nobody.returncode == 2 and "no such merchant" in nobody.stderr
    not_ready = client.request("GET", "/v1/reports/sku/2026-01-01")
    assert (not_ready.status_code, not_ready.json()["code"]) == (404, "REPORT_NOT_READY")
    for wrong in ("2026-02-30", "26-01-01", "1999-12-31", "2999-01-01"):
        answer = client.request("GET", f"/v1/reports/sku/{wrong}")
        assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_REPORT_DATE"), wrong
