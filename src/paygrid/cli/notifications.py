"""``paygrid notifications``: list a payment's merchant notifications (商户通知), resend one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    tool_database,
    tool_settings,
)
from paygrid.notify.service import NotificationNotFound, NotifyService
from paygrid.notify.url_policy import parse_networks
from paygrid.platform.bootstrap import secret_lookup

app = typer.Typer(help="Merchant notifications (商户通知).", no_args_is_help=True)


def _notify_service(
    data_dir: Path | None, database_url: str | None, config_file: Path | None
) -> NotifyService:
    settings = tool_settings(data_dir, database_url, config_file)
    db, vault = tool_database(settings)
    allowed = parse_networks(settings.notify_allow_networks)
    return NotifyService(db, secret_lookup(vault), allowed_networks=allowed)


@app.command("list")
def notifications_list(
    payment_id: Annotated[str, typer.Option("--payment-id")],
    mchid: Annotated[str, typer.Option("--mchid")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """List a payment's notifications with their delivery attempts."""
    service = _notify_service(data_dir, database_url, config_file)
    rows = service.list_for(mchid, payment_id)
    table = Table("id", "type", "status", "attempts", "next attempt", "last result")
    for n in rows:
        last = n["deliveries"][-1] if n["deliveries"] else None
        result = "" if last is None else str(last["http_status"] or last["error"])
        table.add_row(
            n["id"], n["type"], n["status"], str(n["attempts"]), n["next_attempt_at"] or "", result
        )
    console.print(table)


@app.command("resend")
def notifications_resend(
    notify_id: str,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Deliver a notification again, now, with the same id."""
    service = _notify_service(data_dir, database_url, config_file)
    try:
        view = service.resend(notify_id, None)
    except NotificationNotFound:
        err.print(f"[red]no notification {notify_id}[/]")
        raise typer.Exit(2) from None
    console.print(json.dumps(view, indent=2, ensure_ascii=False))
