"""MT940 statements of the reserve account: what the bank sandbox writes, paygrid reads back
exactly (through the mt-940 library); a statement that is not whole or does not add up is
refused, naming where."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest

from paygrid.channels.bank.bill_import import import_bill as import_statement
from paygrid.channels.bank.statement import (
    Entry,
    Statement,
    StatementError,
    details,
    parse_mt940,
    write_mt940,
)
from paygrid.recon.bill_format import BillRefused, BillTotals

YEAR_END = date(2026, 12, 31)


def _statement(*entries: Entry, opening: int = 100_000) -> Statement:
    closing = opening + sum(e.amount for e in entries)
    return Statement("6222021000000000001", YEAR_END, 9861, "CNY", opening, closing, entries)


SETTLED = Entry(
    YEAR_END,
    99_801,
    "WX20261230123456",
    "BK0000000001",
    details("WX20261230123456", "财付通支付科技有限公司", "settlement 2026-12-30"),
)
FEE = Entry(YEAR_END, -5, "FEE1", "BK0000000002", "bank fee")


def test_a_statement_reads_back_exactly_with_chinese_details_and_money_out() -> None:
    written = _statement(SETTLED, FEE, Entry(YEAR_END, 1, "A1", "BK3", "one fen"))
    text = write_mt940(written)
    assert text.startswith("{1:F01") and ":61:2612311231C998,01NTRFWX20261230123456//BK" in text
    assert parse_mt940(text.encode(), "x.sta") == written
    empty = _statement()  # a day without entries still has its statement
    assert parse_mt940(write_mt940(empty).encode(), "e.sta") == empty


def _refused(content: bytes, match: str) -> None:
    with pytest.raises(StatementError, match=match) as caught:
        parse_mt940(content, "bank-2026-12-31.sta")
    assert caught.value.where.startswith("bank-2026-12-31.sta")


def test_a_statement_that_does_not_add_up_or_lies_about_a_sign_is_refused() -> None:
    text = write_mt940(_statement(SETTLED))
    one_fen_more = text.replace(":62F:C261231CNY1998,01", ":62F:C261231CNY1998,02")
    _refused(one_fen_more.encode(), "!= closing")
    reversed_as_credit = text.replace("C998,01NTRF", "RC998,01NTRF")  # a reversal is money out
    _refused(reversed_as_credit.encode(), "!= closing")
    _refused(text.replace(":62F:", ":62M:").encode(), "no :62F:")
    _refused(text.encode("utf-8") + text.encode("utf-8"), "2 statements")
    _refused(text.encode("gbk"), "not UTF-8")
    _refused(b"hello", "statements|not an MT940")


def test_recon_takes_in_the_statement_of_its_date_only(tmp_path: Path) -> None:
    path = tmp_path / "bank-2026-12-31.sta"
    path.write_text(write_mt940(_statement(SETTLED, FEE)))
    con = duckdb.connect()
    totals = import_statement(con, path, YEAR_END, "bank")
    assert totals == BillTotals(2, 1, 99_801, 1, 5, 0)
    assert con.execute("SELECT sum(amount), min(reference) FROM bank").fetchone() == (
        99_796,
        "FEE1",
    )
    with pytest.raises(BillRefused, match="not of 2026-12-30"):
        import_statement(duckdb.connect(), path, date(2026, 12, 30), "bank")
