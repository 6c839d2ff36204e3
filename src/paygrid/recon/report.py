"""The reconciliation report of a business date (``paygrid recon report``): what the runs
stored, never a new run. Four tables, each as CSV and as a sheet of one Excel workbook:

- **summary**: per channel, its latest finished run of the date (matched, differences, held,
  the channel's cases still open);
- **differences**: every difference of those runs, the held ones too (``held`` true);
- **cases**: the date's 差错 cases with their state and last step;
- **sku**: per merchant and SKU the figures of :mod:`paygrid.recon.sku_report` (empty, with a
  note, when no channel's bill of the date is in).

And the 30 days ending on the date (matched vs differences per channel and date) for the chart
(:mod:`paygrid.recon.report_chart`). Amounts are integers of fen. Every file is written to a
temporary name in the directory and renamed: a reader never sees half a file, and the same
stored data gives the same bytes (the workbook's dates and its archive's times are fixed to the
business date).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import select

from paygrid.recon import case_store
from paygrid.recon.case_store import StoredCase
from paygrid.recon.cases import CaseStatus
from paygrid.recon.results import ChannelResult, Difference
from paygrid.recon.service import result_from_json
from paygrid.recon.sku_report import NoBills, sku_figures
from paygrid.recon.sku_results import CSV_COLUMNS as SKU_FIGURES
from paygrid.recon.sku_results import SkuFigures
from paygrid.storage.database import Database
from paygrid.storage.schema import recon_runs

DAYS = 30  # the chart's window, ending on the report's date
Cell = str | int | bool | None

SUMMARY = (
    "channel",
    "matched_count",
    "matched_amount",
    "differences",
    "held",
    "open_cases",
    "run_id",
    "finished_at",
)
DIFFERENCE_FIELDS = (
    "kind",
    "flow",
    "payment_id",
    "out_trade_no",
    "refund_id",
    "out_refund_no",
    "channel_trade_no",
    "paygrid_amount",
    "channel_amount",
    "booked_amount",
    "expected_fee",
    "channel_fee",
    "case_id",
)
DIFFERENCES = ("channel", "held", *DIFFERENCE_FIELDS)
CASES = (
    "case_id",
    "channel",
    "date",
    "kind",
    "reference",
    "status",
    "resolution",
    "amount",
    "currency",
    "opened_at",
    "last_by",
    "last_at",
    "last_reason",
    "voucher_id",
)
SKU = ("mchid", *SKU_FIGURES)


class NoRuns(LookupError):
    """No recon run of the date was stored: nothing to report."""


@dataclass(frozen=True, slots=True)
class Run:
    channel: str
    run_id: str
    finished_at: datetime
    result: ChannelResult


@dataclass(frozen=True, slots=True)
class DayCounts:
    matched: int
    differences: int


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # the file's suffix and the sheet's name
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str | None = None  # why it is empty, when it is


@dataclass(frozen=True, slots=True)
class Output:
    path: Path
    write: Callable[[], None]


# --- what the runs stored -------------------------------------------------------------------
def latest_runs(db: Database, day: date) -> tuple[Run, ...]:
    """The latest finished run of each channel (``bank`` too) of ``day``, by channel; NoRuns
    when there is none."""
    query = (
        select(recon_runs.c.channel, recon_runs.c.run_id, recon_runs.c.finished_at)
        .add_columns(recon_runs.c.result)
        .where(recon_runs.c.business_date == day.isoformat())
        .order_by(recon_runs.c.channel, recon_runs.c.finished_at.desc(), recon_runs.c.run_id.desc())
    )
    found: dict[str, Run] = {}
    with db.read() as conn:
        for row in conn.execute(query):
            if row.channel not in found:
                result = result_from_json(_json(row.result))
                found[row.channel] = Run(row.channel, row.run_id, row.finished_at, result)
    if not found:
        raise NoRuns(f"no recon run of {day} stored")
    return tuple(found.values())


def history(db: Database, day: date, days: int = DAYS) -> dict[str, dict[date, DayCounts]]:
    """Per channel and business date of the ``days`` ending on ``day``, the latest run's
    matched and differences counts; a date without a run is absent."""
    first = day - timedelta(days=days - 1)
    c = recon_runs.c
    query = (
        select(c.channel, c.business_date, c.matched_count, c.differences)
        .where(c.business_date >= first.isoformat(), c.business_date <= day.isoformat())
        .order_by(c.channel, c.business_date, c.finished_at.desc(), c.run_id.desc())
    )
    out: dict[str, dict[date, DayCounts]] = {}
    with db.read() as conn:
        for row in conn.execute(query):
            per_day = out.setdefault(row.channel, {})
            key = date.fromisoformat(row.business_date)
            if key not in per_day:
                per_day[key] = DayCounts(int(row.matched_count), int(row.differences))
    return out


def cases(db: Database, day: date) -> tuple[StoredCase, ...]:
    """The date's cases, oldest first (a run opens its cases at one instant: then by id)."""
    with db.read() as conn:
        found = case_store.listing(conn, day)
    return tuple(sorted(found, key=lambda s: (s.case.history[0].at, s.case.case_id)))


def sku(db: Database, data_dir: Path, day: date) -> tuple[SkuFigures | None, str | None]:
    """The per-SKU figures of the date, or None and why not."""
    try:
        return sku_figures(db, data_dir, day), None
    except NoBills:
        return None, f"no channel's bill of {day} taken in: no per-SKU figures"
    except duckdb.IOException as exc:  # the bill's stored file is not in this data dir
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"a bill of {day} could not be read from the data dir: {first}"


def _json(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc


# --- the tables -----------------------------------------------------------------------------
def tables_of(
    runs: tuple[Run, ...],
    found: tuple[StoredCase, ...],
    figures: SkuFigures | None,
    note: str | None,
) -> tuple[Table, ...]:
    return (
        summary_table(runs, found),
        differences_table(runs),
        cases_table(found),
        sku_table(figures, note),
    )


def summary_table(runs: tuple[Run, ...], found: tuple[StoredCase, ...]) -> Table:
    open_cases: dict[str, int] = {}
    for s in found:
        if s.case.status == CaseStatus.OPEN:
            open_cases[s.case.channel] = open_cases.get(s.case.channel, 0) + 1
    rows = tuple(
        (
            r.channel,
            r.result.matched_count,
            r.result.matched_amount,
            len(r.result.differences),
            len(r.result.held),
            open_cases.get(r.channel, 0),
            r.run_id,
            r.finished_at.isoformat(),
        )
        for r in runs
    )
    return Table("summary", SUMMARY, rows)


def differences_table(runs: tuple[Run, ...]) -> Table:
    def row(channel: str, held: bool, d: Difference) -> tuple[Cell, ...]:
        return (channel, held, *(getattr(d, name) for name in DIFFERENCE_FIELDS))

    rows = tuple(
        row(r.channel, held, d)
        for r in runs
        for held, part in ((False, r.result.differences), (True, r.result.held))
        for d in part
    )
    return Table("differences", DIFFERENCES, rows)


def cases_table(found: tuple[StoredCase, ...]) -> Table:
    rows = []
    for s in found:
        case, last = s.case, s.case.history[-1]
        voucher = next((h.voucher_id for h in reversed(case.history) if h.voucher_id), None)
        rows.append(
            (
                case.case_id,
                case.channel,
                case.business_date,
                str(case.kind),
                s.reference,
                str(case.status),
                str(case.resolution) if case.resolution else None,
                case.amount,
                case.currency,
                case.history[0].at.isoformat(),
                last.by,
                last.at.isoformat(),
                last.reason,
                voucher,
            )
        )
    return Table("cases", CASES, tuple(rows))


def sku_table(figures: SkuFigures | None, note: str | None) -> Table:
    if figures is None:
        return Table("sku", SKU, (), note)
    day = figures.business_date.isoformat()
    rows = tuple(
        (m.mchid, day, *(getattr(r, name) for name in SKU_FIGURES[1:]))
        for m in figures.merchants
        for r in m.skus
    )
    return Table("sku", SKU, rows, None if rows else f"no merchant's payment on the bills of {day}")


# --- the files ------------------------------------------------------------------------------
def file_name(day: date, suffix: str) -> str:
    return f"recon-{day.isoformat()}{suffix}"


def outputs(
    out_dir: Path,
    day: date,
    tables: tuple[Table, ...],
    chart: Callable[[Path], None],
) -> list[Output]:
    """What to write, in order: a CSV per table, the workbook, the chart (``chart`` writes a
    PNG to the path it is given)."""
    found = [_csv(out_dir / file_name(day, f"-{t.name}.csv"), t) for t in tables]
    book = out_dir / file_name(day, ".xlsx")
    found.append(Output(book, lambda: write_atomic(book, lambda tmp: _workbook(tmp, day, tables))))
    png = out_dir / file_name(day, f"-{DAYS}days.png")
    found.append(Output(png, lambda: write_atomic(png, chart)))
    return found


def _csv(path: Path, table: Table) -> Output:
    def write(tmp: Path) -> None:
        tmp.write_bytes(_csv_bytes(table))

    return Output(path, lambda: write_atomic(path, write))


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _csv_bytes(table: Table) -> bytes:
    """UTF-8 with a BOM (Excel then reads Chinese text right); booleans as true/false."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(
            ["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in row]
        )
    return out.getvalue().encode("utf-8-sig")


def _workbook(path: Path, day: date, tables: tuple[Table, ...]) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    from openpyxl.writer.excel import ExcelWriter

    book = Workbook()
    for blank in list(book.worksheets):  # a new workbook comes with one
        book.remove(blank)
    bold, note_font = Font(bold=True), Font(italic=True, color="808080")
    for table in tables:
        sheet = book.create_sheet(table.name)
        sheet.append(list(table.columns))
        for cell in sheet[1]:
            cell.font = bold
        for row in table.rows:
            sheet.append(list(row))
        for cells in sheet.iter_rows(min_row=2):
            for cell in cells:
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # text as text, never a formula ("=...")
        if table.note and not table.rows:
            sheet.cell(row=2, column=1, value=table.note).font = note_font
        sheet.freeze_panes = "A2"
        for i, name in enumerate(table.columns, start=1):
            longest = max([len(name), *(len(str(r[i - 1] or "")) for r in table.rows)])
            sheet.column_dimensions[get_column_letter(i)].width = min(longest + 2, 60)
    stamp = datetime.combine(day, time(), UTC).replace(tzinfo=None)  # openpyxl: naive UTC
    book.properties.created = book.properties.modified = stamp
    book.properties.creator = "paygrid"
    with _FixedTimes(path, day) as archive:
        ExcelWriter(book, archive).save()  # not book.save(): it stamps "modified" with now


class _FixedTimes(zipfile.ZipFile):
    """A zip whose members all carry one fixed time: the same workbook, the same bytes."""

    def __init__(self, path: Path, day: date) -> None:
        super().__init__(path, "w", zipfile.ZIP_DEFLATED)
        self._stamp = (max(day.year, 1980), day.month, day.day, 0, 0, 0)

    def writestr(
        self,
        zinfo_or_arcname: str | zipfile.ZipInfo,
        data: Any,
        compress_type: int | None = None,
        compresslevel: int | None = None,
    ) -> None:
        if isinstance(zinfo_or_arcname, str):
            zinfo_or_arcname = zipfile.ZipInfo(zinfo_or_arcname, self._stamp)
            zinfo_or_arcname.compress_type = zipfile.ZIP_DEFLATED
            zinfo_or_arcname.external_attr = 0o600 << 16
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)

    def write(
        self,
        filename: str | os.PathLike[str],
        arcname: str | os.PathLike[str] | None = None,
        compress_type: int | None = None,
        compresslevel: int | None = None,
    ) -> None:
        """A worksheet openpyxl wrote to a temporary file: in, at the fixed time too."""
        name = os.fspath(filename if arcname is None else arcname)
        self.writestr(name, Path(filename).read_bytes(), compress_type, compresslevel)
