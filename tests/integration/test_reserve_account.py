"""`paygrid up` starts the bank sandbox with the channel sandboxes: a paid day, closed at the
channel, arrives in the reserve account (备付金) the next day, net of the channel's fee, in the
bank's MT940 statement."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import httpx

from paygrid.channels.bank.statement import parse_mt940
from paygrid.kernel.money import rate_fee
from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid
from tests.support import MerchantReceiver


def test_a_closed_day_arrives_in_the_reserve_account(
    platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory()
    day = business_day(paid(running, merchant)[0]["paid_at"])
    closed = running.sandbox("POST", "/sandbox/close-day", {"date": day.isoformat()}).json()
    net = 10_000 - rate_fee(10_000, 2000)
    assert closed["settlement"]["status"] == "SETTLED", closed
    assert closed["settlement"]["net"] == net
    bank = httpx.get(f"{running.bank_url}/sandbox/credentials").json()
    statement = parse_mt940(_statement(running.bank_url, bank, day + timedelta(days=1)), "bank")
    assert [e.amount for e in statement.entries] == [net]
    assert statement.account == bank["account"]


def _statement(base: str, bank: dict[str, str], day: date) -> bytes:
    url = f"{base}/v1/accounts/{bank['account']}/statements/{day.isoformat()}"
    auth = {"Authorization": f"Bearer {bank['api_key']}"}
    return httpx.get(url, headers=auth).raise_for_status().content


def test_the_bank_statement_comes_in_through_recon(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, tmp_path: Path
) -> None:
    running = platform_factory()
    day = business_day(paid(running, merchant)[0]["paid_at"])
    due = (day + timedelta(days=1)).isoformat()
    not_out = running.paygrid("recon", "fetch", "--channel", "bank", "--date", due)
    assert not_out.returncode == 75, not_out.stderr  # tomorrow's statement is not out
    running.sandbox("POST", "/sandbox/close-day", {"date": day.isoformat()})
    fetched = running.paygrid("recon", "fetch", "--channel", "bank", "--date", due, "--json")
    assert fetched.returncode == 0, fetched.stderr
    statement = json.loads(fetched.stdout)
    assert statement["payments"] == {"count": 1, "amount": 10_000 - rate_fee(10_000, 2000)}
    bank = httpx.get(f"{running.bank_url}/sandbox/credentials").json()
    text = _statement(running.bank_url, bank, day + timedelta(days=1)).decode()
    tampered = tmp_path / "statement.sta"
    tampered.write_text(text.replace(":62F:C", ":62F:D"))  # the closing balance turned debit
    refused = running.paygrid("recon", "import", str(tampered), "--channel", "bank", "--date", due)
    assert refused.returncode == 2 and "statement.sta" in refused.stderr, refused.stderr
    assert "!= closing" in refused.stderr
