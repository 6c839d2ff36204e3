"""Alipay trade bills (the zip of two GBK files) into recon's normalised table (DuckDB):
golden bills in the real layout, and refusals naming the line and field."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from paygrid.channels.alipay.bill import BEIJING
from paygrid.channels.alipay.bill_import import import_bill
from paygrid.channels.alipay.sandbox.bill_writer import BillRow, write_bill_zip
from paygrid.recon.bill_format import BillRefused, BillTotals

DAY = date(2026, 11, 30)
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=BEIJING)
PID = "2088000000000001"


def _row(n: int, total: int, fee: int, at: datetime = NOON) -> BillRow:
    return BillRow(
        trade_no=f"2026113022001{n:015d}",
        out_trade_no=f"ord_{n}",
        kind="交易",
        subject="苹果，两斤",
        created_at=at,
        finished_at=at,
        buyer_account="130****3212",
        total=total,
        received=total,
        service_fee=-fee,
    )


def _refund(paid: BillRow, amount: int, fee_back: int) -> BillRow:
    return BillRow(
        trade_no=paid.trade_no,
        out_trade_no=paid.out_trade_no,
        kind="退款",
        subject=paid.subject,
        created_at=paid.created_at,
        finished_at=paid.finished_at + timedelta(hours=1),
        buyer_account=paid.buyer_account,
        total=paid.total,
        received=-amount,
        service_fee=fee_back,
        out_request_no="rfo_1",
    )


ROWS = [_row(1, 10_000, 60), _row(2, 1, 0, NOON.replace(hour=0, minute=0, second=0))]
ROWS.append(_refund(ROWS[0], 3_000, 18))


def _import(tmp_path: Path, content: bytes) -> tuple[BillTotals, list[tuple[object, ...]]]:
    path = tmp_path / f"{PID}0156_20261130.csv.zip"
    path.write_bytes(content)
    con = duckdb.connect()
    totals = import_bill(con, path, DAY, "bill")
    return totals, con.execute("SELECT * FROM bill ORDER BY trade_time").fetchall()


def test_a_golden_bill_is_normalised_exactly(tmp_path: Path) -> None:
    totals, rows = _import(tmp_path, write_bill_zip(PID, DAY, ROWS, NOON))
    assert totals == BillTotals(3, 2, 10_001, 1, 3_000, 42)
    first = rows[0]
    assert first[0] == "PAYMENT" and first[1] == datetime(2026, 11, 29, 16, 0)  # UTC
    assert first[2:] == (ROWS[1].trade_no, "ord_2", None, 1, 0, "CNY", "SUCCESS", PID)
    refund = rows[-1]
    assert refund[0] == "REFUND" and refund[3:7] == ("ord_1", "rfo_1", 3_000, -18)


def _rezip(content: bytes, change: tuple[str, str]) -> bytes:
    """The same zip with one text replaced in the detail file (re-encoded as GBK)."""
    return _rezip_bytes(content, lambda b: b.decode("gb18030").replace(*change).encode("gb18030"))


def _rezip_bytes(content: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """The same zip with the detail file's bytes changed."""
    source = zipfile.ZipFile(io.BytesIO(content), metadata_encoding="gbk")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data if "汇总" in info.filename else change(data))
    return out.getvalue()


def test_a_bad_bill_is_refused_naming_line_and_field(tmp_path: Path) -> None:
    good = write_bill_zip(PID, DAY, ROWS, NOON)
    cases = [
        (("100.00,100.00", "100.005,100.005"), (6, "订单金额（元）")),
        (("商家实收共100.01元", "商家实收共100.02元"), (None, "#交易合计")),
        (("2026-11-30 00:00:00", "2026-12-01 00:00:00"), (None, "完成时间")),
    ]
    for change, (line, field) in cases:
        with pytest.raises(BillRefused) as caught:
            _import(tmp_path, _rezip(good, change))
        assert caught.value.field == field, str(caught.value)
        if line is not None:
            assert caught.value.line == line, str(caught.value)
    with pytest.raises(BillRefused, match="not a zip"):
        _import(tmp_path, b"PK not really")


@pytest.fixture(params=["iconv", "python"])
def transcoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways out of GBK, the iconv one in pieces a few lines long (many piece edges)."""
    from paygrid.channels.alipay import gbk

    if request.param == "python":
        monkeypatch.setattr(gbk, "ICONV", None)
    else:
        assert gbk.ICONV is not None, "glibc's iconv is in Debian's libc-bin"
        monkeypatch.setattr(gbk, "CHUNK_BYTES", 97)
        monkeypatch.setattr(gbk, "PIECE_BYTES", 300)
    return str(request.param)


def test_both_transcoders_read_the_same_rows(tmp_path: Path, transcoder: str) -> None:
    many = [_row(n, 100 + n, n % 3) for n in range(1, 40)]
    totals, rows = _import(tmp_path, write_bill_zip(PID, DAY, many, NOON))
    assert totals.lines == 39
    assert sorted(r[3] for r in rows) == sorted(f"ord_{n}" for n in range(1, 40))
    assert totals.payment_amount == sum(100 + n for n in range(1, 40))


def test_bytes_that_are_not_gbk_are_refused(tmp_path: Path, transcoder: str) -> None:
    good = write_bill_zip(PID, DAY, [_row(n, 100, 0) for n in range(1, 30)], NOON)
    bad = _rezip_bytes(good, lambda b: b.replace("苹果".encode("gb18030"), b"\xff\xfe", 1))
    with pytest.raises(BillRefused, match="is not GBK text"):
        _import(tmp_path, bad)
