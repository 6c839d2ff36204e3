"""`paygrid recon run` against a running platform: paygrid's payments against the channel's
bill, with a callback the channel never delivered (paygrid still PAYING: repaired through the
state machine, notified) and a bill line paygrid never had (长款): exactly those two
differences, the rest matched, in the JSON contract of the issue."""

from __future__ import annotations

import json

from sqlalchemy import text

from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid, write_voucher
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, wait_until

AMOUNT = 10_000


def test_recon_run_finds_exactly_the_differences_and_repairs_the_status(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    client = running.client()
    three = paid(running, merchant, 3)
    running.sandbox("POST", "/sandbox/faults", {"drop_rate": 1})  # its callback never comes
    lost = client.create_payment(order(merchant)).json()
    pay(running, lost["code_url"])
    running.sandbox("DELETE", "/sandbox/faults")
    assert client.get_payment(lost["payment_id"]).json()["status"] == "PAYING"
    day = business_day(three[-1]["paid_at"])
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
    assert sorted(kinds) == ["CHANNEL_ONLY", "STATUS_REPAIRED"]
    assert [h["kind"] for h in result["held"]] == ["SETTLEMENT_PENDING"]  # D+1's statement: not in
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
        # beyond the contract: a voucher's amount (the ledger's kinds), payment or refund,
        # and the fees of a FEE_MISMATCH
        "booked_amount",
        "flow",
        "expected_fee",
        "channel_fee",
    }
    assert all(d["case_id"] for d in result["differences"])  # every difference is a case
    wait_status(client, lost["payment_id"], "SUCCESS")  # through the state machine
    wait_until(
        lambda: any(lost["payment_id"] in body.decode() for _, body in merchant.received),
        timeout=30,
    )  # and the merchant is notified of it
    # once the repair's events are through, every money invariant holds (capture voucher...)
    wait_until(lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0, 30)

    # Run again: the same result, the same cases (the repair is not applied twice, and it is
    # still reported: the record says recon repaired it)
    again = running.paygrid("recon", "run", "--date", str(day), "--channel", "wechatpay", "--json")
    [second] = json.loads(again.stdout)["results"]
    assert second == result

    listed = running.paygrid("recon", "cases", "list", "--date", str(day), "--json")
    cases = {c["kind"]: c for c in json.loads(listed.stdout)}
    assert sorted(cases) == ["CHANNEL_ONLY", "STATUS_REPAIRED"]
    assert cases["STATUS_REPAIRED"]["status"] == "CLOSED"
    assert cases["STATUS_REPAIRED"]["resolution"] == "AUTO_RESOLVED"
    assert cases["STATUS_REPAIRED"]["amount"] == 0
    longer = cases["CHANNEL_ONLY"]  # 长款: paygrid's books lack the channel's amount
    assert (longer["status"], longer["amount"]) == ("OPEN", kinds["CHANNEL_ONLY"]["channel_amount"])
    assert longer["case_id"] == kinds["CHANNEL_ONLY"]["case_id"]


def test_a_run_without_a_bill_is_refused(platform_factory: PlatformFactory) -> None:
    running = platform_factory()
    done = running.paygrid("recon", "run", "--date", "2026-11-01")
    assert done.returncode == 2 and "recon fetch" in done.stderr, done.stderr
    one = running.paygrid("recon", "run", "--date", "2026-11-01", "--channel", "wechatpay")
    assert one.returncode == 2


def test_the_accounting_flow_against_the_payment_flow(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    """A capture voucher lost, one without its payment, one of another amount: exactly these
    three, each once (the books are tampered with directly, as only a bug or a person could)."""
    running = platform_factory()
    three = paid(running, merchant, 3)
    day = business_day(three[-1]["paid_at"])
    wait_until(lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0, 30)
    running.sandbox("POST", "/sandbox/close-day", {"date": day.isoformat()})
    assert (
        running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", str(day)).returncode
        == 0
    )
    lost, changed = three[0]["payment_id"], three[1]["payment_id"]
    db = running.database()
    with db.transaction() as conn:
        voucher = conn.execute(
            text("SELECT voucher_id FROM ledger_vouchers WHERE business_ref = :p"), {"p": lost}
        ).scalar_one()
        conn.execute(text("DELETE FROM ledger_entries WHERE voucher_id = :v"), {"v": voucher})
        conn.execute(text("DELETE FROM ledger_vouchers WHERE voucher_id = :v"), {"v": voucher})
        conn.execute(
            text(
                "UPDATE ledger_entries SET amount = amount + 1 WHERE direction = 'D' AND "
                "account_code LIKE 'pending_clearing:%' AND voucher_id = "
                "(SELECT voucher_id FROM ledger_vouchers WHERE business_ref = :p)"
            ),
            {"p": changed},
        )
        orphan = [("pending_clearing:wechatpay:CNY", "D", 500), ("fee_income:CNY", "C", 500)]
        write_voucher(conn, "vch_orphan", "capture", "pay_nobody", day, orphan)
    db.dispose()
    done = running.paygrid(
        "recon",
        "run",
        "--date",
        str(day),
        "--channel",
        "wechatpay",
        "--json",
        "--grace-seconds",
        "0",
    )
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["results"]
    got = sorted((d["kind"], d["payment_id"], d["booked_amount"]) for d in result["differences"])
    assert got == [
        ("VOUCHER_AMOUNT_MISMATCH", changed, AMOUNT + 1),
        ("VOUCHER_MISSING", lost, None),
        ("VOUCHER_ORPHAN", "pay_nobody", 500),
    ]
    assert result["matched"]["count"] == 3  # the payment flow itself agrees with the channel
