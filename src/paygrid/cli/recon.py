"""``paygrid recon``: reconciliation (对账). Bills in: ``fetch`` (through the channel's API)
and ``import`` (a file a person drops); ``bills`` lists what was taken in."""

from __future__ import annotations

import functools
import getpass
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from paygrid.channels import registry
from paygrid.channels.bank import BANK
from paygrid.channels.ports import BILL_NOT_READY, ChannelAdapter, ChannelError
from paygrid.cli import recon_cases
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
from paygrid.config import Settings
from paygrid.recon.bill_format import BillRefused
from paygrid.recon.bill_store import ImportedBill, Reader, bills, current_bill, import_file
from paygrid.recon.jobs import NoReader, bank_run, download, reader_for, run_for
from paygrid.recon.jobs import fetch as fetch_bill
from paygrid.recon.results import ChannelResult
from paygrid.recon.run import NoBill
from paygrid.recon.service import Busy, reconcile

app = typer.Typer(help="Reconciliation (对账): bills in, recon runs, cases.", no_args_is_help=True)
app.add_typer(recon_cases.app, name="cases")

Channel = Annotated[
    str, typer.Option("--channel", help="A channel of the registry, or bank (the statement).")
]
Day = Annotated[str, typer.Option("--date", help="The business date, YYYY-MM-DD.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
EXIT_BAD = 2  # bad arguments or a refused bill: nothing was imported
EXIT_NOT_READY = 75  # EX_TEMPFAIL: the channel's bill is not out yet; fetch again later


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="The bill file as the channel gave it.")],
    channel: Channel,
    day: Day,
    by: Annotated[str | None, typer.Option(help="Who imports it (default: this user).")] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """Take a bill file in: checked whole against its own summary, normalised; the same file
    again changes nothing, another file for the channel and date replaces the current one."""
    reader, business_date = _reader(channel), _date(day)
    settings = tool_settings(data_dir, database_url, config_file)
    with progress() as bar:
        imported = step(
            bar,
            f"check and take in {file.name}",
            lambda: _import(settings, channel, business_date, file, reader, "import", by),
        )
    _report(imported, as_json)


@app.command("fetch")
def fetch(
    channel: Channel,
    day: Day,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """Download the channel's bill of the date through its API and take it in (as import).
    Not out yet: exit 75, fetch again later."""
    _reader(channel)  # an unknown channel is a bad argument
    business_date = _date(day)
    settings = tool_settings(data_dir, database_url, config_file)
    db, _ = tool_database(settings)
    try:
        with progress() as bar:
            adapter = _adapter(settings, channel)
            content = step(
                bar,
                f"download {channel} {day}",
                lambda: download(settings, channel, business_date, adapter),
            )
            imported = step(
                bar,
                f"check and take in {len(content):,} bytes",
                lambda: fetch_bill(settings, db, channel, business_date, content, _user()),
            )
    except ChannelError as exc:
        if exc.code == BILL_NOT_READY:
            err.print(f"{channel} bill of {day} is not out yet ({exc.code}): fetch again later")
            raise typer.Exit(EXIT_NOT_READY) from None
        again = " (try again)" if exc.retryable else ""
        err.print(f"[red]{channel} bill of {day} could not be downloaded{again}: {exc}[/]")
        raise typer.Exit(1) from None
    except BillRefused as exc:
        err.print(f"[red]refused, nothing imported:[/] {exc}")
        raise typer.Exit(EXIT_BAD) from None
    finally:
        db.dispose()
    _report(imported, as_json)


def _adapter(settings: Settings, channel: str) -> ChannelAdapter | None:
    """The channel's adapter, built from its settings (None for the bank)."""
    if channel == BANK:
        return None
    from paygrid.platform.bootstrap import channel_adapter

    return channel_adapter(settings, channel)


@app.command("run")
def run(
    day: Day,
    channel: Annotated[
        str | None, typer.Option("--channel", help="One channel (default all).")
    ] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
    grace_seconds: Annotated[
        int, typer.Option(help="A success younger than this may still be on its way to the ledger.")
    ] = 60,
) -> None:
    """Reconcile a business date: paygrid's payments and refunds against each channel's bill
    (matched, differences, held across the cut-off). Exit 0 whenever it ran, differences or
    not; 2 when it could not (no bill, bad arguments)."""
    business_date = _date(day)
    names = [channel] if channel else list(registry.NAMES)
    if channel:
        _reader(channel)  # an unknown channel is a bad argument
    settings = tool_settings(data_dir, database_url, config_file)
    from paygrid.platform.bootstrap import bootstrap

    platform = bootstrap(settings, consumers=())
    try:
        grace = timedelta(seconds=grace_seconds)
        results = _run_channels(platform, names, business_date, grace, explicit=channel is not None)
        if results and channel is None:
            results += _bank_result(platform, business_date)
    except Busy as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_NOT_READY) from None
    finally:
        platform.close()
    if not results:
        err.print(f"[red]no bill of {day} taken in for {', '.join(names)}: recon fetch first[/]")
        raise typer.Exit(EXIT_BAD)
    if as_json:
        doc = {"date": business_date.isoformat(), "results": [r.as_json() for r in results]}
        print(json.dumps(doc, ensure_ascii=False))
        return
    for r in results:
        console.print(
            f"{day} {r.channel}: matched {r.matched_count} ({r.matched_amount} fen net), "
            f"{len(r.differences)} differences, {len(r.held)} held across the cut-off"
        )
        for d in (*r.differences, *r.held):
            console.print(
                f"  {d.kind:<16} {d.payment_id or '-'} {d.out_trade_no or '-'} "
                f"{d.refund_id or ''} paygrid {d.paygrid_amount} channel {d.channel_amount}"
            )


def _run_channels(
    platform: Any, names: list[str], day: date, grace: timedelta, *, explicit: bool
) -> list[ChannelResult]:
    results = []
    with progress() as bar:
        for name in names:
            result = _run_channel(platform, bar, name, day, grace, explicit=explicit)
            if result is not None:
                results.append(result)
    return results


def _run_channel(
    platform: Any, bar: Progress, name: str, day: date, grace: timedelta, *, explicit: bool
) -> ChannelResult | None:
    try:
        _current_bill_or_none(platform, name, day)
        work = functools.partial(run_for, platform, name, day, grace, _say)
        outcome = step(
            bar, f"{name} {day}", lambda: reconcile(platform.db, name, day, work, by=_user())
        )
    except NoBill as exc:
        if explicit:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(EXIT_BAD) from None
        err.print(f"{exc}: skipped")
        return None
    if outcome.waited:
        err.print(f"{name} {day}: another run was under way; this is its result")
    return outcome.result


def _current_bill_or_none(platform: Any, name: str, day: date) -> None:
    """NoBill before taking the lock: nothing to run without the bill."""
    if current_bill(platform.db, name, day) is None:
        raise NoBill(f"no {name} bill of {day} taken in: `paygrid recon fetch` it first")


def _bank_result(platform: Any, day: date) -> list[ChannelResult]:
    """The reserve account's side: credits of the date's statement no channel explains
    (BANK_ONLY, recorded as the channel ``bank``); listed only when there are any."""
    outcome = bank_run(platform, day, _user())
    return [outcome.result] if outcome and outcome.result.differences else []


def _say(message: str) -> None:
    err.print(message)


@app.command("bills")
def list_bills(
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    day: Annotated[str | None, typer.Option("--date")] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """The bills taken in, newest first, with the ones they replaced (the audit record)."""
    settings = tool_settings(data_dir, database_url, config_file)
    db, _ = tool_database(settings)
    rows = bills(db, channel, _date(day) if day else None)
    if as_json:
        print(json.dumps([_jsonable(r) for r in rows], ensure_ascii=False, indent=2))
        return
    for r in rows:
        when = f"{r['imported_at']:%Y-%m-%d %H:%M}"
        console.print(
            f"{r['business_date']} {r['channel']:<10} {r['status']:<8} {r['lines']:>9} lines "
            f"{r['file_name']} ({r['source']} by {r['imported_by']} at {when})"
            + (f" replaced by {r['replaced_by']}" if r["replaced_by"] else "")
        )


def _import(
    settings: Settings,
    channel: str,
    day: date,
    path: Path,
    reader: Reader,
    source: str,
    by: str | None,
) -> ImportedBill:
    db, _ = tool_database(settings)
    who = by or _user()
    try:
        return import_file(db, settings.data_dir, channel, day, path, reader, source=source, by=who)
    except BillRefused as exc:
        err.print(f"[red]refused, nothing imported:[/] {exc}")
        raise typer.Exit(EXIT_BAD) from None
    finally:
        db.dispose()


def _report(imported: ImportedBill, as_json: bool) -> None:
    t = imported.totals
    if as_json:
        doc = {
            "bill_id": imported.bill_id,
            "channel": imported.channel,
            "date": imported.business_date.isoformat(),
            "file": imported.file_name,
            "sha256": imported.sha256,
            "already_imported": imported.already,
            "replaced": imported.replaced,
            "lines": t.lines,
            "payments": {"count": t.payments, "amount": t.payment_amount},
            "refunds": {"count": t.refunds, "amount": t.refund_amount},
            "fee": t.fee,
        }
        print(json.dumps(doc, ensure_ascii=False))
        return
    what = "already imported: nothing changed" if imported.already else "imported"
    console.print(
        f"{imported.channel} {imported.business_date} {what} ({imported.bill_id}"
        + (f", replacing {imported.replaced}" if imported.replaced else "")
        + f"): {t.lines} lines, {t.payments} payments {t.payment_amount} fen, "
        f"{t.refunds} refunds {t.refund_amount} fen, fee {t.fee} fen"
    )


def _reader(channel: str) -> Reader:
    try:
        return reader_for(channel)
    except NoReader as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_BAD) from None


def _date(text: str) -> date:
    return business_day(text)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


from paygrid.cli.recon_sku import sku  # noqa: E402

app.command("sku")(sku)

from paygrid.cli.recon_report import report  # noqa: E402

app.command("report")(report)
