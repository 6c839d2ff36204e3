"""``paygrid recon report``: the reconciliation report of a business date as files, from what
the runs stored (``paygrid.recon.report``): the summary, the differences, the cases and the
per-SKU figures as CSV and as one Excel workbook, and a chart of the last 30 days. Registered
in ``cli/recon.py``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from paygrid.channels import registry
from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    business_day,
    console,
    err,
    progress,
    step,
    tool_database,
    tool_settings,
)
from paygrid.recon import report as recon_report
from paygrid.recon.report import NoRuns, Table
from paygrid.storage.database import Database

Day = Annotated[str, typer.Option("--date", help="The business date, YYYY-MM-DD.")]
OutDir = Annotated[
    Path, typer.Option("--out", help="The directory to write the files to (created if missing).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON: the date and the files.")]
EXIT_BAD = 2  # bad arguments, or no run of the date to report


def report(
    day: Day,
    out: OutDir,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """The report of a business date as files: CSV, one Excel workbook, a 30-day chart.

    Into --out: recon-D-summary.csv, -differences.csv, -cases.csv, -sku.csv (UTF-8 with BOM,
    amounts in fen), recon-D.xlsx (a sheet each) and recon-D-30days.png (matched vs
    differences per channel over the 30 days ending on D). It reports what the runs stored
    and runs nothing: exit 2 when no run of the date exists (`paygrid recon run --date D`
    first)."""
    business_date = business_day(day)
    settings = tool_settings(data_dir, database_url, config_file)
    db, _ = tool_database(settings)
    try:
        with progress() as bar:
            runs = step(bar, "recon runs", lambda: recon_report.latest_runs(db, business_date))
            _out_dir(out)
            tables, history, notes = _gather(bar, db, settings.data_dir, business_date, runs)
            written = _write(bar, out, business_date, tables, history)
    except NoRuns:
        err.print(f"[red]no recon run of {day} stored: `paygrid recon run --date {day}` first[/]")
        raise typer.Exit(EXIT_BAD) from None
    finally:
        db.dispose()
    missing = [name for name in registry.NAMES if name not in {r.channel for r in runs}]
    if missing:
        notes.append(f"no run of {day} for {', '.join(missing)}: not in the report")
    for note in notes:
        err.print(note)
    if as_json:
        doc = {"date": business_date.isoformat(), "files": [str(p) for p in written]}
        print(json.dumps(doc | {"notes": notes}, ensure_ascii=False))
        return
    console.print(f"recon report of {day}: {len(written)} files written")
    for path in written:
        console.print(f"  {path}")


def _gather(
    bar: Progress,
    db: Database,
    data_dir: Path,
    day: date,
    runs: tuple[recon_report.Run, ...],
) -> tuple[tuple[Table, ...], dict[str, dict[date, recon_report.DayCounts]], list[str]]:
    found = step(bar, "cases", lambda: recon_report.cases(db, day))
    figures, note = step(bar, "per-SKU figures", lambda: recon_report.sku(db, data_dir, day))
    days = recon_report.DAYS
    history = step(bar, f"{days} days of runs", lambda: recon_report.history(db, day))
    tables = recon_report.tables_of(runs, found, figures, note)
    return tables, history, [note] if note else []


def _write(
    bar: Progress,
    out: Path,
    day: date,
    tables: tuple[Table, ...],
    history: dict[str, dict[date, recon_report.DayCounts]],
) -> list[Path]:
    from paygrid.recon.report_chart import write_chart

    def chart(path: Path) -> None:
        write_chart(path, day, history)

    written = []
    for output in recon_report.outputs(out, day, tables, chart):
        step(bar, output.path.name, output.write)
        written.append(output.path)
    return written


def _out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err.print(f"[red]--out {out}: {exc.strerror or exc}[/]")
        raise typer.Exit(EXIT_BAD) from None
