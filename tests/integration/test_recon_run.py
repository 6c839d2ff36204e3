"""`paygrid recon run` against a running platform: paygrid's payments against the channel's
bill, with a callback the channel never delivered (paygrid still PAYING: repaired through the
state machine, notified) and a bill line paygrid never had (长款): exactly those two
differences, the rest matched, in the JSON contract of the issue."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, wait_until

AMOUNT = 10_000


def test_recon_run_finds_exactly_the_differences_and_repairs_the_status(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    paid = []
    for _ in range(3):
        payment = client.create_payment(order(merchant)).json()
        pay(running, payment["code_url"])
        paid.append(wait_status(client, payment["payment_id"], "SUCCESS"))
    running.sandbox("POST", "/sandbox/faults", {"drop_rate": 1})  # its callback never comes
    lost = client.create_payment(order(merchant)).json()
    pay(running, lost["code_url"])
    running.sandbox("DELETE", "/sandbox/faults")
    assert client.get_payment(lost["payment_id"]).json()["status"] == "PAYING"
    day = datetime.fromisoformat(paid[-1]["paid_at"]).astimezone(ZoneInfo("Asia/Shanghai")).date()
    running.sandbox("POST", "/sandbox/close-day", {"date": day.isoformat()})
    running.sandbox("POST", "/sandbox/faults", {"extra_lines": 1, "seed": 3})  # a 长款 line
    fetched = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", str(day))
    assert fetched.returncode == 0, fetched.stderr

    done = running.paygrid("recon", "run", "--date", str(day), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [result] = report["results"]  # alipay has no bill of the date: skipped, said on stderr
    assert report["date"] == str(day) and "alipay" in done.stderr
    assert result["matched"] == {"count": 3, "amount": 3 * AMOUNT}
    kinds = {d["kind"]: d for d in result["differences"]}
    assert sorted(kinds) == ["CHANNEL_ONLY", "STATUS_REPAIRED"] and result["held"] == []
    repaired = kinds["STATUS_REPAIRED"]
    assert (repaired["payment_id"], repaired["channel_amount"]) == (lost["payment_id"], AMOUNT)
    assert repaired["out_trade_no"] == lost["out_trade_no"]
    assert kinds["CHANNEL_ONLY"]["payment_id"] is None
    assert set(repaired) == {
        "kind",
        "payment_id",
        "out_trade_no",
        "refund_id",
        "out_refund_no",
        "channel_trade_no",
        "paygrid_amount",
        "channel_amount",
        "case_id",
    }
    wait_status(client, lost["payment_id"], "SUCCESS")  # through the state machine
    wait_until(
        lambda: any(lost["payment_id"] in body.decode() for _, body in merchant.received),
        timeout=30,
    )  # and the merchant is notified of it
    # once the repair's events are through, every money invariant holds (capture voucher...)
    wait_until(lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0, 30)

    again = running.paygrid("recon", "run", "--date", str(day), "--channel", "wechatpay", "--json")
    [second] = json.loads(again.stdout)["results"]
    assert second["matched"] == {"count": 4, "amount": 4 * AMOUNT}  # repaired once: now matched
    assert [d["kind"] for d in second["differences"]] == ["CHANNEL_ONLY"]


def test_a_run_without_a_bill_is_refused(platform_factory: PlatformFactory) -> None:
    running = platform_factory()
    done = running.paygrid("recon", "run", "--date", "2026-11-01")
    assert done.returncode == 2 and "recon fetch" in done.stderr, done.stderr
    one = running.paygrid("recon", "run", "--date", "2026-11-01", "--channel", "wechatpay")
    assert one.returncode == 2
