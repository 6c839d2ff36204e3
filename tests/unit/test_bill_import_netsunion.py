"""NetsUnion clearing files (one per batch, in a zip) into recon's normalised table: every
batch read, amounts exact, each file checked against its own trailer, a bad file refused."""

from __future__ import annotations

import io
import zipfile
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from paygrid.channels.netsunion import bill, wire
from paygrid.channels.netsunion.bill_import import import_bill
from paygrid.recon.bill_format import BillRefused

DAY = date(2026, 6, 15)
AT = datetime(2026, 6, 15, 10, 0, 1, tzinfo=wire.BEIJING)
BANK = "C1010211000012"


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def day_zip(tmp_path: Path, tamper: bool = False) -> Path:
    first = [bill.ClearingRow("PG1", "", "NU1", "0101", BANK, 10000, 3, AT)]
    second = [
        bill.ClearingRow("PG2", "", "NU2", "0101", BANK, 2550, 1, AT),
        bill.ClearingRow("RF1", "PG1", "NR1", "0301", BANK, 4000, 1, AT),
    ]
    files = {
        bill.file_name("Z1", DAY, "2026061501"): bill.write_file("Z1", "2026061501", DAY, first),
        bill.file_name("Z1", DAY, "2026061502"): bill.write_file("Z1", "2026061502", DAY, second),
        bill.file_name("Z1", DAY, "2026061503"): bill.write_file("Z1", "2026061503", DAY, []),
    }
    if tamper:
        name = bill.file_name("Z1", DAY, "2026061502")
        files[name] = files[name].replace(b"CNY25.50", b"CNY25.51", 1)
    path = tmp_path / "clearing.zip"
    path.write_bytes(zipped(files))
    return path


def test_every_batch_is_read_exactly(tmp_path: Path) -> None:
    con = duckdb.connect()
    totals = import_bill(con, day_zip(tmp_path), DAY, "bill")
    assert (totals.lines, totals.payments, totals.payment_amount) == (3, 2, 12550)
    assert (totals.refunds, totals.refund_amount, totals.fee) == (1, 4000, 3)
    rows = con.execute(
        "SELECT kind, payment_ref, refund_ref, amount, fee, channel_mchid, trade_time "
        "FROM bill ORDER BY kind, payment_ref"
    ).fetchall()
    assert rows[0][:6] == ("PAYMENT", "PG1", None, 10000, 3, "Z1")
    assert rows[1][:5] == ("PAYMENT", "PG2", None, 2550, 1)
    assert rows[2][:5] == ("REFUND", "PG1", "RF1", 4000, -1)
    assert rows[0][6] == datetime(2026, 6, 15, 2, 0, 1)  # UTC


def test_a_batch_that_does_not_add_up_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BillRefused, match="TRAILER"):
        import_bill(duckdb.connect(), day_zip(tmp_path, tamper=True), DAY, "bill")


def test_a_file_of_another_day_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BillRefused, match="not a clearing file"):
        import_bill(duckdb.connect(), day_zip(tmp_path), date(2026, 6, 16), "bill")


def test_a_bad_amount_is_named(tmp_path: Path) -> None:
    content = bill.write_file("Z1", "2026061501", DAY, [])
    broken = content.replace(
        b"#TRAILER",
        b"PG9,,NU9,epcc.201.001.01,0101,Z1,C1010211000012,CNY1.5,CNY0.00,"
        b"2026-06-15T10:00:00,00,2026061501,2026-06-15\n#TRAILER",
    )
    path = tmp_path / "bad.zip"
    path.write_bytes(zipped({"a.csv": broken}))
    with pytest.raises(BillRefused) as refused:
        import_bill(duckdb.connect(), path, DAY, "bill")
    assert refused.value.field == "TrxAmt"
