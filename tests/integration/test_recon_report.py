"""`paygrid recon report` against a running platform: payments through the channel's sandbox
(one whose callback never came, repaired by the run), the bill fetched with a line paygrid
never had (长款), the date run, one case written off; then the report's files: the summary,
the differences (held ones too), the cases and the per-SKU figures as CSV match what the run,
`recon cases list` and `recon sku` report; the workbook has the same rows on a sheet each; the
chart is a PNG. The same report again gives the same bytes; without any run it is refused."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from PIL import Image
from sqlalchemy import text

from paygrid.recon.report import SKU
from tests.conftest import PlatformFactory
from tests.integration.recon_helpers import business_day, paid
from tests.integration.test_payment_flow import order, pay
from tests.support import MerchantReceiver, RunningPlatform

pytestmark = pytest.mark.timeout(240)
SHEETS = ("summary", "differences", "cases", "sku")
BOM = b"\xef\xbb\xbf"


def _names(day: str) -> list[str]:
    return [
        *(f"recon-{day}-{sheet}.csv" for sheet in SHEETS),
        f"recon-{day}.xlsx",
        f"recon-{day}-30days.png",
    ]


def _csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(BOM)  # Excel opens the Chinese text right
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def _rows(path: Path) -> list[list[str]]:
    """The CSV's header and rows, as lists."""
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))


def _text(value: Any) -> str:
    """A value as the CSV writes it (and a cell of the workbook compared with it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _json(running: RunningPlatform, *args: str) -> Any:
    done = running.paygrid(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _report(running: RunningPlatform, day: str, out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = _json(running, "recon", "report", "--date", day, "--out", str(out))
    assert doc["date"] == day
    assert [Path(f).name for f in doc["files"]] == _names(day)
    return doc


def test_the_report_is_what_the_run_stored_as_csv_workbook_and_chart(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, tmp_path: Path
) -> None:
    running = platform_factory()
    client = running.client()
    three = paid(running, merchant, 3)
    running.sandbox("POST", "/sandbox/faults", {"drop_rate": 1})  # its callback never comes
    lost = client.create_payment(order(merchant)).json()
    pay(running, lost["code_url"])
    running.sandbox("DELETE", "/sandbox/faults")
    day = str(business_day(three[-1]["paid_at"]))
    running.sandbox("POST", "/sandbox/close-day", {"date": day})
    running.sandbox("POST", "/sandbox/faults", {"extra_lines": 1, "seed": 3})  # a 长款 line
    fetched = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day)
    assert fetched.returncode == 0, fetched.stderr

    out = tmp_path / "report"
    early = running.paygrid("recon", "report", "--date", day, "--out", str(out))
    assert early.returncode == 2, early.stderr  # the report runs nothing: no run, no report
    assert f"recon run --date {day}" in early.stderr and not out.exists()

    [result] = _json(running, "recon", "run", "--date", day)["results"]
    kinds = {d["kind"]: d for d in result["differences"]}
    assert sorted(kinds) == ["CHANNEL_ONLY", "STATUS_REPAIRED"] and result["held"]
    written_off = kinds["CHANNEL_ONLY"]["case_id"]
    resolved = running.paygrid(
        "recon", "cases", "resolve", written_off, "--action", "write-off",
        "--reason", "无法追回 unrecoverable", "--by", "li.na",
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr
    cases = _json(running, "recon", "cases", "list", "--date", day)
    sku = _json(running, "recon", "sku", "--date", day)

    doc = _report(running, day, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(_names(day))  # no temporary left
    assert any("alipay" in note for note in doc["notes"])  # no bill, no run: said

    # summary: the run's figures, its cases still open (the written-off one is closed)
    with running.database().read() as conn:
        run_id = conn.execute(
            text(
                "SELECT run_id FROM recon_runs WHERE channel = 'wechatpay' AND business_date = :d"
            ),
            {"d": day},
        ).scalar_one()
    [summary] = _csv(out / f"recon-{day}-summary.csv")
    assert summary == summary | {
        "channel": "wechatpay",
        "matched_count": str(result["matched"]["count"]),
        "matched_amount": str(result["matched"]["amount"]),
        "differences": str(len(result["differences"])),
        "held": str(len(result["held"])),
        "open_cases": "0",
        "run_id": run_id,
    }
    assert summary["finished_at"]

    # differences: every one of the run's, held ones too, every field as the JSON has it
    expected = [
        {"channel": "wechatpay", "held": _text(held)} | {k: _text(v) for k, v in d.items()}
        for held, part in ((False, result["differences"]), (True, result["held"]))
        for d in part
    ]
    assert _csv(out / f"recon-{day}-differences.csv") == expected

    # cases: the date's, with their state and last step
    rows = {r["case_id"]: r for r in _csv(out / f"recon-{day}-cases.csv")}
    assert (
        sorted(rows)
        == sorted(c["case_id"] for c in cases)
        == sorted(d["case_id"] for d in result["differences"])
    )
    for c in cases:
        row = rows[c["case_id"]]
        assert (row["channel"], row["date"], row["kind"]) == (c["channel"], day, c["kind"])
        assert (row["status"], row["amount"]) == (c["status"], str(c["amount"]))
        assert row["resolution"] == _text(c["resolution"])
        assert (row["last_by"], row["last_reason"]) == (
            c["history"][-1]["by"],
            c["history"][-1]["reason"],
        )
    off = rows[written_off]
    assert (off["status"], off["resolution"], off["last_by"]) == ("CLOSED", "WRITTEN_OFF", "li.na")
    assert off["voucher_id"] and off["amount"] == str(kinds["CHANNEL_ONLY"]["channel_amount"])

    # per SKU: per merchant, what `recon sku` says
    assert sku["merchants"]
    assert _csv(out / f"recon-{day}-sku.csv") == [
        {"mchid": m["mchid"], "business_date": day} | {k: str(v) for k, v in s.items()}
        for m in sku["merchants"]
        for s in m["skus"]
    ]

    # the workbook: a sheet each, the same rows, the header bold and frozen, amounts integers
    book = load_workbook(out / f"recon-{day}.xlsx")
    assert book.sheetnames == list(SHEETS)
    for name in SHEETS:
        sheet = book[name]
        assert sheet.freeze_panes == "A2" and all(cell.font.b for cell in sheet[1])
        cells = [[_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
        assert cells == _rows(out / f"recon-{day}-{name}.csv")
    amounts = [row[2] for row in book["summary"].iter_rows(min_row=2, values_only=True)]
    assert amounts == [result["matched"]["amount"]]  # an int of fen, not text, not a float

    with Image.open(out / f"recon-{day}-30days.png") as chart:
        assert chart.format == "PNG"
        assert chart.width >= 800 and 300 <= chart.height <= 3000

    # the same report again: the same bytes, every file
    before = {name: (out / name).read_bytes() for name in _names(day)}
    _report(running, day, out)
    assert {name: (out / name).read_bytes() for name in _names(day)} == before


def test_no_bill_for_the_sku_table_still_writes_the_report(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, tmp_path: Path
) -> None:
    """The bill's stored file gone from the data dir (a report made on another machine), then
    no current bill of the date at all: the per-SKU sheet is empty with a note, the rest is
    written."""
    running = platform_factory()
    day = str(business_day(paid(running, merchant, 1)[0]["paid_at"]))
    running.sandbox("POST", "/sandbox/close-day", {"date": day})
    fetched = running.paygrid("recon", "fetch", "--channel", "wechatpay", "--date", day)
    assert fetched.returncode == 0, fetched.stderr
    [result] = _json(running, "recon", "run", "--date", day)["results"]
    for stored in (running.data_dir / "recon" / "bills" / "wechatpay").rglob("*.parquet"):
        stored.unlink()

    _no_sku_figures(running, day, tmp_path / "gone", result, "could not be read")

    with running.database().transaction() as conn:  # no current bill of the date any more
        conn.execute(text("UPDATE recon_bills SET status = 'REPLACED'"))
    _no_sku_figures(running, day, tmp_path / "replaced", result, "no channel's bill")


def _no_sku_figures(
    running: RunningPlatform, day: str, out: Path, result: dict[str, Any], why: str
) -> None:
    doc = _report(running, day, out)
    assert any(why in note for note in doc["notes"]), doc["notes"]
    assert _rows(out / f"recon-{day}-sku.csv") == [list(SKU)]  # the header only
    [summary] = _csv(out / f"recon-{day}-summary.csv")
    assert summary["matched_count"] == str(result["matched"]["count"])
    sheet = load_workbook(out / f"recon-{day}.xlsx")["sku"]
    note = sheet.cell(row=2, column=1).value
    assert isinstance(note, str) and why in note
