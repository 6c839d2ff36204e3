"""The bank sandbox as its own process: the reserve account takes a channel's transfer once
per reference, and serves the day's MT940 statement (after the day ends or close-day) that
paygrid reads back; balances chain from one day to the next."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import httpx

from paygrid.channels.bank.statement import parse_mt940
from tests.integration.wechatpay_helpers import SandboxProcess, start_module

DAY = date(2026, 11, 30)


def _bank(tmp_path: Path) -> SandboxProcess:
    return start_module("paygrid.channels.bank.sandbox", "bank sandbox listening on ", tmp_path)


def _credit(http: httpx.Client, account: str, ref: str, amount: int, day: date) -> httpx.Response:
    body = {
        "account": account,
        "reference": ref,
        "amount": amount,
        "currency": "CNY",
        "value_date": day.isoformat(),
        "payer_name": "财付通支付科技有限公司",
        "details": "settlement",
    }
    return http.post("/sandbox/credit", json=body)


def test_transfers_in_and_the_days_statements_out(tmp_path: Path) -> None:
    bank = _bank(tmp_path)
    try:
        http = bank.http()
        creds = http.get("/sandbox/credentials").json()
        account, auth = creds["account"], {"Authorization": f"Bearer {creds['api_key']}"}
        first = _credit(http, account, "WX20261129000001", 99_801, DAY)
        assert first.status_code == 201
        again = _credit(http, account, "WX20261129000001", 99_801, DAY)  # the same transfer
        assert again.status_code == 200 and again.json() == first.json()
        other = _credit(http, account, "WX20261129000001", 5, DAY)  # its reference reused
        assert other.status_code == 409 and other.json()["code"] == "REFERENCE_REUSED"
        assert _credit(http, account, "AP20261130000001", 20_000, DAY + timedelta(1)).is_success
        url = f"/v1/accounts/{account}/statements/{DAY.isoformat()}"
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        day1 = parse_mt940(http.get(url, headers=auth).raise_for_status().content, "d1")
        assert (day1.opening, day1.closing, day1.account) == (0, 99_801, account)
        assert [e.reference for e in day1.entries] == ["WX20261129000001"]
        assert "财付通支付科技有限公司" in day1.entries[0].details
        url2 = url.replace(DAY.isoformat(), (DAY + timedelta(1)).isoformat())
        day2 = parse_mt940(http.get(url2, headers=auth).content, "d2")
        assert (day2.opening, day2.closing) == (day1.closing, 119_801)  # chained
        far = url.replace(DAY.isoformat(), "2099-01-01")
        not_yet = http.get(far, headers=auth)
        assert not_yet.status_code == 404 and not_yet.json()["code"] == "STATEMENT_NOT_READY"
        assert http.post("/sandbox/close-day", json={"date": "2099-01-01"}).is_success
        assert parse_mt940(http.get(far, headers=auth).content, "far").closing == 119_801
    finally:
        bank.stop()


def test_a_bad_transfer_is_refused_and_books_nothing(tmp_path: Path) -> None:
    bank = _bank(tmp_path)
    try:
        http = bank.http()
        account = http.get("/sandbox/credentials").json()["account"]
        for ref, amount, day in [
            ("WX/1", 100, DAY),  # not letters and digits
            ("A" * 17, 100, DAY),  # longer than :61: allows
            ("OK1", 0, DAY),
            ("OK2", -5, DAY),
        ]:
            assert _credit(http, account, ref, amount, day).status_code == 400
        assert _credit(http, "123", "OK3", 100, DAY).status_code == 404
        bad_date = http.post("/sandbox/credit", json={"account": account, "value_date": "x"})
        assert bad_date.status_code == 400
    finally:
        bank.stop()
