"""The `paygrid` command line (Typer)."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from paygrid import config, datadir
from paygrid.channels import registry
from paygrid.merchants.domain import DEFAULT_ROTATION_GRACE
from paygrid.merchants.vault import Vault
from paygrid.notify.service import NotificationNotFound, NotifyService
from paygrid.notify.url_policy import parse_networks
from paygrid.platform.bootstrap import (
    KekError,
    check_vault,
    load_vault,
    migrate_schema,
    secret_lookup,
)
from paygrid.storage.database import Database

app = typer.Typer(
    help="paygrid: the back office of a payment team.", no_args_is_help=True, add_completion=False
)
merchant_app = typer.Typer(help="Merchants (商户).", no_args_is_help=True)
sandbox_app = typer.Typer(help="Channel sandboxes.", no_args_is_help=True)
notify_app = typer.Typer(help="Merchant notifications (商户通知).", no_args_is_help=True)
app.add_typer(merchant_app, name="merchant")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(notify_app, name="notifications")
drill_app = typer.Typer(help="Fault drills.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # paths and messages stay whole for scripts

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


@app.callback()
def _private_files() -> None:
    # Everything paygrid and its children create is owner-only (docs/operations.md).
    datadir.restrict_umask()


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings(**flags: object) -> config.Settings:
    """The command's settings; a bad one ends it with exit 2 naming where it came from."""
    try:
        return config.resolve(flags)
    except config.ConfigError as exc:
        typer.echo(f"paygrid: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def up(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    api_port: Annotated[int | None, typer.Option(help="Merchant API port (default 8000).")] = None,
    cashier_port: Annotated[int | None, typer.Option(help="Cashier port (default 8001).")] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="embedded (one process, SQLite) or prod (a process per context, "
            "PostgreSQL, NATS JetStream); default embedded."
        ),
    ] = None,
    config_file: ConfigFile = None,
    verbose: bool = False,
) -> None:
    """Run the whole platform on this machine: the embedded profile (SQLite, in-process bus)
    or the production profile (supervised processes, PostgreSQL, NATS JetStream)."""
    settings = _settings(
        data_dir=data_dir,
        database_url=database_url,
        api_port=api_port,
        cashier_port=cashier_port,
        profile=profile,
        config=config_file,
    )
    _logging(verbose)
    try:
        if settings.profile == "prod":
            _up_prod(settings)
        else:
            from paygrid.platform.embedded import run_embedded

            run_embedded(settings, lambda p, creds: _print_ready(p.settings, creds))
    except RuntimeError as exc:
        err.print(f"[red]paygrid up failed:[/] {exc}")
        raise typer.Exit(1) from None


def _print_ready(s: config.Settings, creds: dict[str, str]) -> None:
    console.print(
        f"[bold green]paygrid is up[/] ({s.profile} profile, data in {s.data_dir.resolve()})"
    )
    console.print(f"  merchant API   {s.api_base_url}/v1   (OpenAPI: {s.api_base_url}/docs)")
    console.print(f"  cashier        {s.cashier_base_url}")
    if s.profile != "prod":
        console.print(f"  metrics        http://127.0.0.1:{s.ops_port}/metrics (operators)")
    if s.profile == "prod":
        console.print(f"  gateway        {s.callback_base_url}/callbacks/{{channel}}")
        console.print(f"  database       {s.database_url}")
        console.print(f"  NATS           {s.nats_url}")
    for name, cs in s.channels.items():
        console.print(f"  {name} sandbox {cs.base_url}")
    console.print(
        f"  demo merchant  mchid={creds['mchid']} key_id={creds['key_id']} secret={creds['secret']}"
    )
    console.print(f"  credentials in {s.data_dir / 'demo-merchant.json'}")
    console.print("Press Ctrl+C to stop.")


def _up_prod(settings: config.Settings) -> None:
    from paygrid.platform.supervisor import Supervisor

    supervisor = Supervisor(settings)
    try:
        creds = supervisor.prepare()
        supervisor.wait_ready()
    except BaseException:
        supervisor.stop()
        raise
    _print_ready(supervisor.s, creds)
    datadir.write_private(
        settings.data_dir / "profile.json",
        json.dumps(
            {
                "profile": "prod",
                "database_url": supervisor.s.database_url,
                "nats_url": supervisor.s.nats_url,
                "kek_file": str(settings.kek_file.resolve()) if settings.kek_file else None,
            }
        ),
    )
    supervisor.run()


@app.command(hidden=True)
def run(
    role: Annotated[
        str,
        typer.Argument(help="api, cashier, gateway, core, relay, ledger, notifier or scheduler"),
    ],
) -> None:
    """Run one role of the production profile (the supervisor starts these)."""
    from paygrid.platform.roles import run_role
    from paygrid.platform.workers import ROLE_NAMES

    if role not in ROLE_NAMES:
        err.print(f"[red]unknown role {role!r}; roles: {', '.join(ROLE_NAMES)}[/]")
        raise typer.Exit(2)
    run_role(role, _settings())


@app.command()
def status(data_dir: DataDir = None, config_file: ConfigFile = None) -> None:
    """The production profile's processes: pid, uptime, restarts, last deaths."""
    path = _settings(data_dir=data_dir, config=config_file).data_dir / "status.json"
    if not path.exists():
        err.print(f"[red]no {path}: is `paygrid up --profile prod` running here?[/]")
        raise typer.Exit(2)
    body = json.loads(path.read_text())
    table = Table("process", "pid", "state", "uptime", "restarts", "last exit")
    for p in body["processes"]:
        state = "[green]up[/]" if p["alive"] else "[red]down[/]"
        table.add_row(
            p["name"],
            str(p["pid"]),
            state,
            f"{p['uptime_s']:.0f}s",
            str(p["restarts"]),
            "" if p["last_exit"] is None else str(p["last_exit"]),
        )
    console.print(table)
    age = time.time() - float(body["at"])
    if age > 5:
        err.print(f"[yellow]status is {age:.0f}s old: the supervisor may not be running[/]")


@app.command()
def migrate(
    data_dir: DataDir = None, database_url: DbUrl = None, config_file: ConfigFile = None
) -> None:
    """Create or upgrade the database schema."""
    settings = _tool_settings(data_dir, database_url, config_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _tool_database(settings)
    console.print("schema is up to date")


@app.command()
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

    settings = _tool_settings(data_dir, database_url, config_file)
    if settings.database_url is None and not (settings.data_dir / "paygrid.db").exists():
        err.print(f"[red]no database at {settings.data_dir / 'paygrid.db'}[/]")
        raise typer.Exit(2)
    db, _ = _tool_database(settings)
    violations = check_database(db, timedelta(seconds=grace_seconds))
    if not violations:
        console.print("[green]all money invariants hold[/]")
        return
    for v in violations:
        err.print(f"[red]{v.code}[/] {v.detail}")
    err.print(f"{len(violations)} violation(s)")
    raise typer.Exit(1)


@merchant_app.command("create")
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

    settings = _tool_settings(data_dir, database_url, config_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db, vault = _tool_database(settings)
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


@merchant_app.command("rotate-key")
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

    settings = _tool_settings(data_dir, database_url, config_file)
    db, vault = _tool_database(settings)
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


def _tool_settings(
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
    settings = _settings(**flags)
    marker = settings.data_dir / "profile.json"
    if not marker.exists():
        return settings
    started = json.loads(marker.read_text())
    if settings.profile != started.get("profile", settings.profile):
        settings = _settings(**flags, profile=started["profile"])
    if settings.database_url is None:
        settings = replace(settings, database_url=started.get("database_url"))
    if settings.kek is None and settings.kek_file is None and started.get("kek_file"):
        settings = replace(settings, kek_file=Path(started["kek_file"]))
    return settings


def _tool_database(settings: config.Settings) -> tuple[Database, Vault]:
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


def _sandbox_channel(channel: str) -> registry.ChannelSpec:
    try:
        return registry.spec(channel)
    except registry.UnknownChannel:
        err.print(f"[red]unknown channel {channel!r}; known: {', '.join(registry.NAMES)}[/]")
        raise typer.Exit(2) from None


@sandbox_app.command("credentials")
def sandbox_credentials(
    channel: str,
    data_dir: DataDir = None,
    url: Annotated[
        str | None,
        typer.Option(help="The running sandbox's base URL (default $PAYGRID_<CHANNEL>_BASE_URL)."),
    ] = None,
    config_file: ConfigFile = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print what a merchant of CHANNEL downloads from its merchant platform: keys and ids."""
    spec = _sandbox_channel(channel)
    settings = _settings(data_dir=data_dir, config=config_file, **{f"{channel}_base_url": url})
    base = settings.channels[channel].base_url
    try:
        creds = httpx.get(f"{base}/sandbox/credentials", timeout=3.0).raise_for_status().json()
    except httpx.HTTPError:
        creds = spec.sandbox_credentials(settings.data_dir / "sandbox" / channel)
    if as_json:
        print(json.dumps(creds, ensure_ascii=False, indent=2))
        return
    for key, value in creds.items():
        console.print(f"[bold]{key}[/]\n{value}")


@sandbox_app.command("serve")
def sandbox_serve(
    channel: str,
    data_dir: DataDir = None,
    port: Annotated[
        int | None, typer.Option(help="default: the port of $PAYGRID_<CHANNEL>_BASE_URL")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="default: the host of $PAYGRID_<CHANNEL>_BASE_URL")
    ] = None,
    config_file: ConfigFile = None,
) -> None:
    """Run one channel sandbox in the foreground; its state lives in DATA_DIR/sandbox/CHANNEL,
    where `paygrid up` keeps it."""
    spec = _sandbox_channel(channel)
    from urllib.parse import urlsplit

    settings = _settings(data_dir=data_dir, config=config_file)
    where = urlsplit(settings.channels[channel].base_url)
    spec.run_sandbox(
        settings.data_dir / "sandbox" / channel,
        host or where.hostname or "127.0.0.1",
        port or where.port or spec.default_port,
    )


def _notify_service(
    data_dir: Path | None, database_url: str | None, config_file: Path | None
) -> NotifyService:
    settings = _tool_settings(data_dir, database_url, config_file)
    db, vault = _tool_database(settings)
    allowed = parse_networks(settings.notify_allow_networks)
    return NotifyService(db, secret_lookup(vault), allowed_networks=allowed)


@notify_app.command("list")
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


@notify_app.command("resend")
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


@drill_app.command("crash")
def drill_crash(
    payments: Annotated[int, typer.Option(help="How many payments to drive (1-1000).")] = 100,
    seconds: Annotated[float, typer.Option(help="How long the chaos lasts (5-600).")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the random kills and faults.")] = 1,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the drill's platform lives; default a new temp dir."
        ),
    ] = None,
) -> None:
    """Start the production profile, drive payments while SIGKILLing random processes (and
    NATS and PostgreSQL once), then check that nothing was lost or counted twice. The drill's
    platform is its own (fresh PostgreSQL, NATS, ports): it reads no PAYGRID_* setting."""
    from paygrid.ops.drill import run_drill, summary

    if not (1 <= payments <= 1000 and 5 <= seconds <= 600):
        err.print("[red]--payments must be 1..1000 and --seconds 5..600[/]")
        raise typer.Exit(2)
    report = run_drill(payments, seconds, seed, data_dir, lambda line: console.print(line))
    console.print("killed:")
    for kill in report.kills:
        console.print(f"  {kill}")
    console.print(json.dumps(summary(report)))
    if report.ok:
        console.print("[bold green]drill passed[/]: the platform converged; invariants hold")
        return
    for problem in report.problems[:50]:
        err.print(f"[red]{problem}[/]")
    err.print(f"drill FAILED with {len(report.problems)} problem(s)")
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
