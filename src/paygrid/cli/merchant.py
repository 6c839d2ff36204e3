"""``paygrid merchant``: onboard merchants (商户), rotate their API keys."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from paygrid.channels import registry
from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    tool_database,
    tool_settings,
)
from paygrid.merchants.domain import DEFAULT_ROTATION_GRACE

app = typer.Typer(help="Merchants (商户).", no_args_is_help=True)


@app.command("create")
def merchant_create(
    name: Annotated[str, typer.Option("--name", help="Merchant name.")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    fee_rate_ppm: Annotated[
        int, typer.Option(help="Merchant fee in parts per million (6000 = 0.60%).")
    ] = 6000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Onboard a merchant and print its credentials (shown once)."""
    from paygrid.merchants.service import create_merchant

    settings = tool_settings(data_dir, database_url, config_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db, vault = tool_database(settings)
    try:
        onboarded = create_merchant(db, vault, name, fee_rate_ppm, methods=registry.NAMES)
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    creds = onboarded.credentials()
    if as_json:
        print(json.dumps(creds, ensure_ascii=False))
    else:
        for key, value in creds.items():
            console.print(f"{key:8} {value}")


@app.command("rotate-key")
def merchant_rotate_key(
    mchid: Annotated[str, typer.Option("--mchid", help="The merchant's number.")],
    grace_seconds: Annotated[
        int,
        typer.Option(help="How long the merchant's current keys keep working (0 = refuse now)."),
    ] = int(DEFAULT_ROTATION_GRACE.total_seconds()),
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Issue a new API key (printed once); the old keys are refused after the grace period.
    Notifications are signed with the new key from now on."""
    from paygrid.merchants.service import MerchantNotFound, rotate_key

    settings = tool_settings(data_dir, database_url, config_file)
    db, vault = tool_database(settings)
    try:
        rotation = rotate_key(db, vault, mchid, timedelta(seconds=grace_seconds))
    except MerchantNotFound:
        err.print(f"[red]no merchant {mchid}[/]")
        raise typer.Exit(2) from None
    except (ValueError, OverflowError) as exc:
        err.print(f"[red]--grace-seconds: {exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(rotation.as_dict(), ensure_ascii=False))
        return
    for key, value in rotation.as_dict().items():
        console.print(f"{key:18} {value}")
