"""The database: ``paygrid migrate`` and ``paygrid check`` (the money invariants)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    tool_database,
    tool_settings,
)


def migrate(
    data_dir: DataDir = None, database_url: DbUrl = None, config_file: ConfigFile = None
) -> None:
    """Create or upgrade the database schema."""
    settings = tool_settings(data_dir, database_url, config_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tool_database(settings)
    console.print("schema is up to date")


def check(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    grace_seconds: Annotated[
        int, typer.Option(help="Events younger than this may still be in flight.")
    ] = 60,
) -> None:
    """Verify the money invariants on the stored data; exit 1 naming each violation."""
    from paygrid.ops.check import check_database

    settings = tool_settings(data_dir, database_url, config_file)
    if settings.database_url is None and not (settings.data_dir / "paygrid.db").exists():
        err.print(f"[red]no database at {settings.data_dir / 'paygrid.db'}[/]")
        raise typer.Exit(2)
    db, _ = tool_database(settings)
    violations = check_database(db, timedelta(seconds=grace_seconds))
    if not violations:
        console.print("[green]all money invariants hold[/]")
        return
    for v in violations:
        err.print(f"[red]{v.code}[/] {v.detail}")
    err.print(f"{len(violations)} violation(s)")
    raise typer.Exit(1)
