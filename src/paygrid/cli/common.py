"""What every command shares: the consoles, the options that are settings, resolving the
settings, and the database and vault of a command run beside a platform."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from paygrid import config
from paygrid.merchants.vault import Vault
from paygrid.platform.bootstrap import KekError, check_vault, load_vault, migrate_schema
from paygrid.storage.database import Database

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # paths and messages stay whole for scripts
T = TypeVar("T")

# Options that are settings default to None ("not given"): only a flag actually given
# overrides the environment and the configuration file (config.resolve).
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where paygrid keeps its data (default ./var)."),
]
DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL URL (default SQLite in the data dir)."),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file with a paygrid table (default $PAYGRID_CONFIG)."),
]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def resolve_settings(**flags: object) -> config.Settings:
    """The command's settings; a bad one ends it with exit 2 naming where it came from."""
    try:
        return config.resolve(flags)
    except config.ConfigError as exc:
        typer.echo(f"paygrid: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def tool_settings(
    data_dir: Path | None, database_url: str | None, config_file: Path | None = None
) -> config.Settings:
    """Settings for a command run beside a platform. A production profile started in this
    data dir left its profile, database URL and KEK file in profile.json: where no source
    names them, those apply (so the prod defaults, e.g. the notify allow list, hold too)."""
    flags: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "config": config_file,
    }
    settings = resolve_settings(**flags)
    marker = settings.data_dir / "profile.json"
    if not marker.exists():
        return settings
    started = json.loads(marker.read_text())
    if settings.profile != started.get("profile", settings.profile):
        settings = resolve_settings(**flags, profile=started["profile"])
    if settings.database_url is None:
        settings = replace(settings, database_url=started.get("database_url"))
    if settings.kek is None and settings.kek_file is None and started.get("kek_file"):
        settings = replace(settings, kek_file=Path(started["kek_file"]))
    return settings


def tool_database(settings: config.Settings) -> tuple[Database, Vault]:
    """The platform's database, migrated, and the vault its merchant secrets open with."""
    try:
        vault = load_vault(settings)
        db = Database(settings.db_url)
        migrate_schema(db, vault)
        check_vault(db, vault)
    except KekError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    return db, vault


def business_day(text: str, option: str = "--date") -> date:
    """A business date option (YYYY-MM-DD); a bad one is exit 2 with the option named."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
    except ValueError:
        pass
    err.print(f"[red]{option} {text!r}: a date YYYY-MM-DD[/]")
    raise typer.Exit(2)


def progress() -> Progress:
    """Long work's bar, on stderr (stdout stays the result or the JSON); only on a terminal."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def step(bar: Progress, what: str, work: Callable[[], T]) -> T:
    """One step of long work as a task of ``bar``, done when ``work`` returns."""
    task = bar.add_task(what, total=1)
    done = work()
    bar.update(task, completed=1)
    return done
