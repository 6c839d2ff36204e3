"""``paygrid routing``: what routing does now, cut-over weights, the rules file, the audit and
rollback. Every change is a new version, in force in every process within a second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from paygrid.channels import registry
from paygrid.channels.ports import METHODS
from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    tool_database,
    tool_settings,
)
from paygrid.kernel.banks import BANKS
from paygrid.routing import audit, store
from paygrid.routing.config import (
    ALL_BANKS,
    ConfigError,
    RoutingConfig,
    bp_to_percent,
    percent_to_bp,
)
from paygrid.routing.rules_file import Vocabulary, parse
from paygrid.storage.database import Database

app = typer.Typer(
    help="Routing (路由): rules, cut-over weights, audit, rollback.", no_args_is_help=True
)
rules_app = typer.Typer(help="The routing rules file (TOML).", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

By = Annotated[str, typer.Option("--by", help="Who makes the change (the audit names them).")]
Reason = Annotated[str, typer.Option("--reason", help="Why (the audit keeps it).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
VOCABULARY = Vocabulary(registry.NAMES, METHODS, tuple(BANKS))


def _db(data_dir: Path | None, database_url: str | None, config_file: Path | None) -> Database:
    db, _ = tool_database(tool_settings(data_dir, database_url, config_file))
    return db


def _refused(exc: Exception | str, where: str = "") -> typer.Exit:
    err.print(f"[red]{where}{exc}[/]" if where else f"[red]{exc}[/]")
    return typer.Exit(2)


@app.command("show")
def show(
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """The configuration in force: version, rules (first match wins), weights, rates."""
    found = store.load(_db(data_dir, database_url, config_file))
    if as_json:
        body: dict[str, object] = {"version": 0} if found is None else _version_json(found)
        console.print_json(json.dumps(body, ensure_ascii=False))
        return
    if found is None:
        console.print("routing: not configured (version 0): every payment names its channel")
        return
    config = found.config
    console.print(
        f"routing version {found.version}, {found.action} by {found.actor} at "
        f"{found.created_at:%Y-%m-%d %H:%M:%S} UTC: {found.reason}"
    )
    rules = Table("#", "rule", "channels", "merchants", "methods", "currencies", "banks", "amount")
    for i, r in enumerate(config.rules, 1):
        rules.add_row(
            str(i), r.name, ", ".join(r.channels), _any(r.merchants), _any(r.methods),
            _any(r.currencies), _any(r.banks), f"{r.min_amount}..{r.max_amount}",
        )  # fmt: skip
    console.print(rules)
    weights = Table("bank", "channel", "share")
    for bank, shares in sorted(config.weights.items()):
        for channel, bp in sorted(shares.items()):
            weights.add_row(bank, channel, bp_to_percent(bp) + "%")
    console.print(weights if config.weights else "weights: none (the cheapest channel takes all)")


@app.command("set-weight")
def set_weight(
    bank: Annotated[str, typer.Option("--bank", help="Payer bank code, or * for any bank.")],
    channel: Annotated[str, typer.Option("--channel")],
    percent: Annotated[str, typer.Option("--percent", help="Share of the bank's payments, 0-100.")],
    by: By,
    reason: Reason,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Send PERCENT of BANK's payments through CHANNEL (0 removes the weight)."""
    if bank != ALL_BANKS and bank not in BANKS:
        raise _refused(ConfigError(f"--bank {bank!r}: one of {', '.join(sorted(BANKS))} or *"))
    if channel not in registry.NAMES:
        raise _refused(ConfigError(f"--channel {channel!r}: one of {', '.join(registry.NAMES)}"))
    try:
        bp = percent_to_bp(percent)
        db = _db(data_dir, database_url, config_file)
        version = store.change(
            db, "set-weight", by, reason, lambda c: c.with_weight(bank, channel, bp)
        )
    except (ConfigError, store.ConcurrentChange) as exc:
        raise _refused(exc) from None
    console.print(f"routing version {version.version}: {bank} {channel} {bp_to_percent(bp)}%")


@rules_app.command("apply")
def rules_apply(
    file: Annotated[Path, typer.Argument(help="The rules file (TOML).")],
    by: By,
    reason: Reason,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Validate FILE whole and put it in force as a new version (refused whole if bad)."""
    text = _read(file)
    db = _db(data_dir, database_url, config_file)
    try:
        version = store.change(
            db, "rules-apply", by, reason, lambda base: _parsed(file, text, base)
        )
    except (ConfigError, store.ConcurrentChange) as exc:
        raise _refused(exc) from None
    console.print(
        f"routing version {version.version}: {len(version.config.rules)} rules from {file}"
    )


@rules_app.command("check")
def rules_check(file: Annotated[Path, typer.Argument(help="The rules file (TOML).")]) -> None:
    """Validate FILE without putting it in force."""
    config = _parsed(file, _read(file), store.EMPTY)
    console.print(f"{file}: {len(config.rules)} rules, valid")


@app.command("history")
def history(
    limit: Annotated[int, typer.Option("--limit", min=1, max=store.HISTORY_LIMIT)] = 20,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """The audit: every version, newest first, with who, when, why and what changed."""
    db = _db(data_dir, database_url, config_file)
    versions = store.history(db, limit + 1)
    rows = []
    for i, v in enumerate(versions[:limit]):
        before = versions[i + 1].config if i + 1 < len(versions) else store.EMPTY
        if i + 1 == len(versions) and v.version > 1:
            older = store.load(db, v.version - 1)
            before = older.config if older else store.EMPTY
        rows.append((v, audit.changes(before, v.config)))
    if as_json:
        body = [{**_version_json(v), "changes": c} for v, c in rows]
        console.print_json(json.dumps(body, ensure_ascii=False))
        return
    table = Table("version", "at (UTC)", "by", "action", "reason", "changes")
    for v, c in rows:
        table.add_row(
            str(v.version), f"{v.created_at:%Y-%m-%d %H:%M:%S}", v.actor, v.action, v.reason,
            "\n".join(c) or "-",
        )  # fmt: skip
    console.print(table)


@app.command("rollback")
def rollback(
    by: By,
    reason: Reason,
    to: Annotated[int | None, typer.Option("--to", help="Version to go back to.")] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Put back the previous version (or --to N) as a new version."""
    db = _db(data_dir, database_url, config_file)
    try:
        version = store.rollback(db, by, reason, to)
    except (ConfigError, store.ConcurrentChange) as exc:
        raise _refused(exc) from None
    console.print(f"routing version {version.version}: {version.reason}")


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _refused(ConfigError(f"{file}: cannot read it: {exc}")) from None


def _parsed(file: Path, text: str, base: RoutingConfig) -> RoutingConfig:
    try:
        return parse(text, VOCABULARY, base).config
    except ConfigError as exc:
        where = f"{file}:{exc.line}: " if exc.line else f"{file}: "
        raise _refused(exc.message, where) from None


def _version_json(v: store.Version) -> dict[str, object]:
    return {
        "version": v.version,
        "action": v.action,
        "by": v.actor,
        "reason": v.reason,
        "at": v.created_at.isoformat(),
        **v.config.to_json(),
    }


def _any(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "*"
