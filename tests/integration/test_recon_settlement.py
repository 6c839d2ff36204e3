"""`paygrid recon run`'s settlement flow: the channel's net of a date against the reserve
account's statement (T+1), the voucher "channel settles to reserve bank" posted once for a
matched transfer, the pending-clearing control total, and a credit nobody explains."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from paygrid.kernel.money import rate_fee
from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid, write_voucher
from tests.support import MerchantReceiver, RunningPlatform, wait_until

AMOUNT = 10_000
NET = AMOUNT - rate_fee(AMOUNT, 2000)


def _paid_closed_fetched(
    running: RunningPlatform, merchant: MerchantReceiver, faults: dict[str, Any]
) -> date:
    day = business_day(paid(running, merchant)[0]["paid_at"])
    wait_until(lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0, 30)
    running.sandbox("POST", "/sandbox/faults", faults)
    closed = running.sandbox("POST", "/sandbox/close-day", {"date": str(day)}).json()
    assert closed["settlement"]["status"] in ("SETTLED", "NONE"), closed
    tomorrow = {"date": str(day + timedelta(days=1))}  # the bank's next day ends, money or not
    httpx.post(f"{running.bank_url}/sandbox/close-day", json=tomorrow).raise_for_status()
    for channel, on in (("wechatpay", day), ("bank", day + timedelta(days=1))):
        got = running.paygrid("recon", "fetch", "--channel", channel, "--date", str(on))
        assert got.returncode == 0, got.stderr
    return day


def _run(running: RunningPlatform, day: date) -> dict[str, Any]:
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
    result: dict[str, Any] = json.loads(done.stdout)["results"][0]
    return result


def _settlement_vouchers(running: RunningPlatform) -> list[tuple[str, int]]:
    db = running.database()
    try:
        with db.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT v.business_ref, e.amount FROM ledger_vouchers v JOIN ledger_entries e"
                    " ON e.voucher_id = v.voucher_id AND e.direction = 'D'"
                    " WHERE v.kind = 'settlement'"
                )
            ).all()
    finally:
        db.dispose()
    return [(str(r[0]), int(r[1])) for r in rows]


def test_a_settled_day_matches_and_books_the_money_in_the_reserve_account(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    day = _paid_closed_fetched(running, merchant, {})
    first = _run(running, day)
    assert (first["differences"], first["held"]) == ([], [])
    assert first["matched"] == {"count": 1, "amount": AMOUNT}
    [(ref, booked)] = _settlement_vouchers(running)
    assert ref.startswith(f"wechatpay:WX{day:%Y%m%d}") and booked == NET
    assert _run(running, day) == first  # again: the same result, the voucher posted once
    assert len(_settlement_vouchers(running)) == 1
    assert running.paygrid("check", "--grace-seconds", "0").returncode == 0


def test_a_short_settlement_and_an_unexplained_gap(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    day = _paid_closed_fetched(
        running, merchant, {"settlement": "short", "settlement_short_fen": 7}
    )
    [short] = _run(running, day)["differences"]
    assert (short["kind"], short["paygrid_amount"], short["channel_amount"]) == (
        "SETTLEMENT_AMOUNT_MISMATCH",
        NET,
        NET - 7,
    )
    assert _settlement_vouchers(running) == []  # nothing booked for a transfer that is wrong
    db = running.database()
    with db.transaction() as conn:  # a voucher on pending clearing nothing else explains
        moved = [("pending_clearing:wechatpay:CNY", "D", 300), ("fee_income:CNY", "C", 300)]
        write_voucher(conn, "vch_adj", "adjustment", "adj_1", day, moved)
    db.dispose()
    kinds = [d["kind"] for d in _run(running, day)["differences"]]
    assert kinds == ["SETTLEMENT_AMOUNT_MISMATCH"]  # the gap may be the short transfer's
    running.sandbox("DELETE", "/sandbox/faults")


def test_a_missing_settlement_and_a_stray_credit(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    bank = running.bank_url
    creds = httpx.get(f"{bank}/sandbox/credentials").json()
    day = _paid_closed_fetched(running, merchant, {"settlement": "missing"})
    [missing] = _run(running, day)["differences"]
    assert (missing["kind"], missing["paygrid_amount"]) == ("SETTLEMENT_MISSING", NET)
    stray = {
        "account": creds["account"],
        "reference": "UNKNOWN1",
        "amount": 123,
        "currency": "CNY",
        "value_date": str(day),
        "payer_name": "某公司",
        "details": "not a settlement",
    }
    assert httpx.post(f"{bank}/sandbox/credit", json=stray).status_code == 201
    httpx.post(f"{bank}/sandbox/close-day", json={"date": str(day)})
    assert (
        running.paygrid("recon", "fetch", "--channel", "bank", "--date", str(day)).returncode == 0
    )
    done = running.paygrid("recon", "run", "--date", str(day), "--json", "--grace-seconds", "0")
    assert done.returncode == 0, done.stderr
    results = {r["channel"]: r for r in json.loads(done.stdout)["results"]}
    assert "bank" in results, done.stdout
    [only] = results["bank"]["differences"]
    assert (only["kind"], only["channel_amount"]) == ("BANK_ONLY", 123)
