"""A channel sandbox closing its day settles the day's net (payments − refunds − fees) into the
reserve account at the bank sandbox, T+1, with the settlement faults; paygrid reads the money
in the bank's MT940 statement."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx

from paygrid.channels.bank.settle import BANK_URL_ENV
from paygrid.channels.bank.statement import parse_mt940
from paygrid.kernel.money import rate_fee
from tests.integration.test_wechatpay_sandbox import adapter_for, native, new_ref, pay
from tests.integration.wechatpay_helpers import beijing_date, start_module

WECHAT = ("paygrid.channels.wechatpay.sandbox", "wechatpay sandbox listening on ")


def test_closing_the_day_pays_its_net_into_the_reserve_account(tmp_path: Path) -> None:
    bank = start_module(
        "paygrid.channels.bank.sandbox", "bank sandbox listening on ", tmp_path / "b"
    )
    wechat = start_module(*WECHAT, tmp_path / "w", env_extra={BANK_URL_ENV: bank.base_url})
    try:
        http, banking = wechat.http(), bank.http()
        creds = http.get("/sandbox/credentials").json()
        adapter = adapter_for(creds, wechat.base_url)
        amounts = [777, 10_000]
        for fen in amounts:
            ref = new_ref()
            adapter.create_order(native(ref, "http://127.0.0.1:9/notify", fen))
            paid = pay(http, mchid=creds["mchid"], out_trade_no=ref)["transaction"]
        day = beijing_date(paid["success_time"])
        net = sum(amounts) - sum(rate_fee(fen, 2000) for fen in amounts)
        http.post("/sandbox/faults", json={"settlement": "short", "settlement_short_fen": 100})
        closed = http.post("/sandbox/close-day", json={"date": day.isoformat()}).json()
        settlement = closed["settlement"]
        assert (settlement["status"], settlement["net"]) == ("SETTLED", net)
        assert settlement["transfer"]["amount"] == net - 100
        account = banking.get("/sandbox/credentials").json()
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        due = (day + timedelta(days=1)).isoformat()
        url = f"/v1/accounts/{account['account']}/statements/{due}"
        [entry] = parse_mt940(banking.get(url, headers=auth).content, "s").entries
        assert entry.amount == net - 100 and entry.reference.startswith(f"WX{day:%Y%m%d}")
        assert "财付通支付科技有限公司" in entry.details
        again = http.post("/sandbox/close-day", json={"date": day.isoformat()}).json()
        assert again["settlement"]["transfer"] == settlement["transfer"]  # once per reference
        refused = http.post("/sandbox/faults", json={"settlement": "sometimes"})
        assert refused.status_code == 400
    finally:
        wechat.stop()
        bank.stop()


def test_a_sandbox_started_without_a_bank_settles_nowhere(tmp_path: Path) -> None:
    wechat = start_module(*WECHAT, tmp_path)
    try:
        with httpx.Client(base_url=wechat.base_url) as http:
            closed = http.post("/sandbox/close-day", json={"date": "2026-11-30"}).json()
        assert closed["settlement"] == {"status": "NO_BANK", "net": 0}
    finally:
        wechat.stop()


def test_the_settlement_faults_survive_a_restart_of_either_sandbox(tmp_path: Path) -> None:
    """Faults are stored: a sandbox restarted (the crash drill kills them) reads them back."""
    alipay = ("paygrid.channels.alipay.sandbox", "alipay sandbox listening on ")
    for module, ready in (WECHAT, alipay):
        data = tmp_path / module.split(".")[2]
        sandbox = start_module(module, ready, data)
        try:
            with httpx.Client(base_url=sandbox.base_url) as http:
                faults = {"settlement": "late", "settlement_late_days": 4}
                assert http.post("/sandbox/faults", json=faults).status_code == 200
                assert http.post("/sandbox/faults", json={"settlement": "x"}).status_code == 400
        finally:
            sandbox.stop()
        again = start_module(module, ready, data)
        try:
            with httpx.Client(base_url=again.base_url) as http:
                kept = http.get("/sandbox/faults").json()
            assert (kept["settlement"], kept["settlement_late_days"]) == ("late", 4), module
        finally:
            again.stop()
