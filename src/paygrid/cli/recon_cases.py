"""``paygrid recon cases``: the 差错 cases recon opened, and a person's resolution of one."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    business_day,
    console,
    err,
    tool_database,
    tool_settings,
)
from paygrid.recon import case_store
from paygrid.recon.case_store import StoredCase
from paygrid.recon.cases import Action, CaseRefused, CaseStatus
from paygrid.recon.service import CaseNotFound, resolve_case

app = typer.Typer(help="差错 cases: list them, resolve one.", no_args_is_help=True)
EXIT_BAD = 2


@app.command("list")
def list_cases(
    day: Annotated[str | None, typer.Option("--date", help="A business date, YYYY-MM-DD.")] = None,
    status: Annotated[
        str | None, typer.Option(help="OPEN, AUTO_RESOLVED, ADJUSTED, WRITTEN_OFF or CLOSED.")
    ] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The cases of a date (or all), oldest first, each with its history."""
    wanted = _status(status) if status else None
    settings = tool_settings(data_dir, database_url, config_file)
    db, _ = tool_database(settings)
    try:
        with db.read() as conn:
            found = case_store.listing(conn, business_day(day) if day else None, wanted)
    finally:
        db.dispose()
    if as_json:
        print(json.dumps([case_json(c) for c in found], ensure_ascii=False, indent=2))
        return
    if not found:
        console.print("no cases")
    for c in found:
        case, d = c.case, c.difference
        what = d.get("refund_id") or d.get("payment_id") or d.get("channel_trade_no") or "-"
        console.print(
            f"{case.case_id} {case.business_date} {case.channel:<10} {case.kind:<26} "
            f"{case.status:<13} {case.amount:>10} fen  {what}"
        )


@app.command("resolve")
def resolve(
    case_id: Annotated[str, typer.Argument(help="The case, as `recon cases list` shows it.")],
    action: Annotated[str, typer.Option(help="adjust or write-off.")],
    reason: Annotated[str, typer.Option(help="Why: kept in the case's history.")],
    by: Annotated[str, typer.Option(help="Who resolves it.")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Adjust (the books follow what happened, against recon suspense) or write off (a loss
    or gain): posts the voucher and closes the case, with who, when and why."""
    try:
        chosen = Action(action)
    except ValueError:
        err.print(f"[red]--action {action!r}: adjust or write-off[/]")
        raise typer.Exit(EXIT_BAD) from None
    settings = tool_settings(data_dir, database_url, config_file)
    db, _ = tool_database(settings)
    try:
        resolve_case(db, case_id, chosen, reason, by, settings.zone, settings.cell)
        with db.read() as conn:
            stored = case_store.load(conn, case_id)
    except (CaseNotFound, CaseRefused) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_BAD) from None
    finally:
        db.dispose()
    assert stored is not None
    if as_json:
        print(json.dumps(case_json(stored), ensure_ascii=False))
        return
    voucher = stored.case.history[-2].voucher_id
    console.print(
        f"{case_id} {stored.case.resolution} and closed"
        + (f": voucher {voucher}" if voucher else " (no amount: no voucher)")
    )


def case_json(stored: StoredCase) -> dict[str, Any]:
    case = stored.case
    return {
        "case_id": case.case_id,
        "channel": case.channel,
        "date": case.business_date,
        "kind": str(case.kind),
        "status": str(case.status),
        "resolution": str(case.resolution) if case.resolution else None,
        "amount": case.amount,
        "currency": case.currency,
        "difference": stored.difference,
        "history": [
            {
                "at": step.at.isoformat(),
                "status": str(step.status),
                "by": step.by,
                "reason": step.reason,
                "voucher_id": step.voucher_id,
            }
            for step in case.history
        ],
    }


def _status(text: str) -> CaseStatus:
    try:
        return CaseStatus(text.upper())
    except ValueError:
        known = ", ".join(s.value for s in CaseStatus)
        err.print(f"[red]--status {text!r}: one of {known}[/]")
        raise typer.Exit(EXIT_BAD) from None
