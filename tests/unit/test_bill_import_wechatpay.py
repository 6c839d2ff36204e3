"""WeChat Pay trade bills into recon's normalised table (DuckDB): golden bills in the real
layout, and every way a file is refused whole, naming its line and field."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from paygrid.channels.wechatpay.bill import BEIJING, TradeBillRow, write_trade_bill
from paygrid.recon.bill_format import BillRefused, BillTotals

from paygrid.channels.wechatpay.bill_import import import_bill  # isort: skip

DAY = date(2026, 11, 30)
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=BEIJING)


def _paid(n: int, total: int, fee: int, at: datetime = NOON) -> TradeBillRow:
    return TradeBillRow(
        trade_time=at,
        appid="wx0000",
        mchid="1900000109",
        transaction_id=f"42000000{n:020d}",
        out_trade_no=f"ord_{n}",
        openid="oUser",
        trade_type="NATIVE",
        trade_state="SUCCESS",
        total=total,
        fee=fee,
        rate="0.20%",
        description="苹果, 两斤",  # a comma inside a quoted value
    )


def _refund(paid: TradeBillRow, amount: int, fee_back: int) -> TradeBillRow:
    at = paid.trade_time + timedelta(hours=2)
    return replace(
        paid,
        trade_state="REFUND",
        total=0,
        fee=-fee_back,
        refund_id="50300000000001",
        out_refund_no="rfo_1",
        refund=amount,
        refund_requested=amount,
        refund_type="ORIGINAL",
        refund_status="SUCCESS",
        refund_at=at,
        refund_success_at=at,
        trade_time=at,
    )


ROWS = [
    _paid(1, 10_000, 20),
    _paid(2, 1, 0, NOON.replace(hour=0, minute=0, second=0)),  # zero fee, at the cut-off
    _paid(3, 99_999, 200, NOON.replace(hour=23, minute=59, second=59)),
]
ROWS.append(_refund(ROWS[0], 3_000, 6))


def _import(tmp_path: Path, content: bytes, day: date = DAY) -> tuple[BillTotals, list[tuple]]:
    path = tmp_path / "wx-2026-11-30.csv"
    path.write_bytes(content)
    con = duckdb.connect()
    totals = import_bill(con, path, day, "bill")
    rows = con.execute("SELECT * FROM bill ORDER BY trade_time, kind").fetchall()
    return totals, rows


def test_a_golden_bill_is_normalised_exactly(tmp_path: Path) -> None:
    totals, rows = _import(tmp_path, write_trade_bill(ROWS))
    assert totals == BillTotals(4, 3, 110_000, 1, 3_000, 214)
    first = rows[0]
    assert first[0] == "PAYMENT" and first[1] == datetime(2026, 11, 29, 16, 0)  # UTC
    assert first[3:8] == ("ord_2", None, 1, 0, "CNY")
    refund = next(r for r in rows if r[0] == "REFUND")
    assert refund[3:10] == ("ord_1", "rfo_1", 3_000, -6, "CNY", "SUCCESS", "1900000109")


def _refused(tmp_path: Path, content: bytes, line: int, field: str) -> BillRefused:
    with pytest.raises(BillRefused) as caught:
        _import(tmp_path, content)
    assert (caught.value.line, caught.value.field) == (line, field), str(caught.value)
    assert caught.value.file == "wx-2026-11-30.csv"
    return caught.value


def test_a_bill_that_does_not_add_up_to_its_summary_is_refused(tmp_path: Path) -> None:
    text = write_trade_bill(ROWS).decode()
    lines = text.split("\r\n")
    summary = lines[6].split(",")
    summary[5] = "`1100.01"  # 订单总金额 one fen more than the rows
    lines[6] = ",".join(summary)
    refusal = _refused(tmp_path, "\r\n".join(lines).encode(), 7, "订单总金额")
    assert "110001" in str(refusal) and "110000" in str(refusal)


def test_a_bad_value_is_refused_with_its_line_and_field(tmp_path: Path) -> None:
    good = write_trade_bill(ROWS).decode()
    _refused(tmp_path, good.replace("`999.99,", "`999.995,").encode(), 4, "订单金额")
    _refused(tmp_path, good.replace("`100.00", "`1e2", 1).encode(), 2, "应结订单金额")
    other_day = write_trade_bill([*ROWS, _paid(4, 5, 0, NOON + timedelta(days=1))])
    _refused(tmp_path, other_day, 6, "交易时间")
    no_summary = "\r\n".join(good.split("\r\n")[:5]) + "\r\n"
    _refused(tmp_path, no_summary.encode(), 0, "总交易单数")
    short_row = good.replace(",`0.20%", "", 1)  # a row with a column fewer
    _refused(tmp_path, short_row.encode(), 2, "")
    _refused(tmp_path, b"\x00\x01 not a bill at all", 1, "")
