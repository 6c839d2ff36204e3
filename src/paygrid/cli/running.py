"""Running the platform: ``paygrid up`` (either profile), ``paygrid run ROLE`` (one process of
the production profile, started by the supervisor), ``paygrid status``."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from paygrid import config, datadir
from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    resolve_settings,
    setup_logging,
)


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
    copies: Annotated[
        str | None,
        typer.Option(
            help="prod: more copies of stateless roles, ROLE=N,... (e.g. api=2,notifier=2)."
        ),
    ] = None,
    config_file: ConfigFile = None,
    verbose: bool = False,
) -> None:
    """Run the whole platform on this machine: the embedded profile (SQLite, in-process bus)
    or the production profile (supervised processes, PostgreSQL, NATS JetStream)."""
    settings = resolve_settings(
        data_dir=data_dir,
        database_url=database_url,
        api_port=api_port,
        cashier_port=cashier_port,
        profile=profile,
        copies=copies,
        config=config_file,
    )
    setup_logging(verbose)
    try:
        if settings.profile == "prod":
            _up_prod(settings)
        else:
            from paygrid.platform.embedded import run_embedded

            run_embedded(settings, lambda p, creds: _print_ready(p.settings, creds), verbose)
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


def run(
    role: Annotated[
        str,
        typer.Argument(
            help="api, cashier, gateway, core, relay, ledger, notifier or scheduler; or "
            "background (the embedded profile's workers)"
        ),
    ],
    copy: Annotated[int, typer.Option(help="Which copy of the role (1 = the first).")] = 1,
    verbose: bool = False,
) -> None:
    """Run one role of the production profile (the supervisor starts these), or the embedded
    profile's background process (`paygrid up` starts it)."""
    from paygrid.platform.workers import BACKGROUND, ROLE_NAMES

    if role == BACKGROUND:
        from paygrid.platform.background import run_background

        setup_logging(verbose)
        run_background(resolve_settings())
        return
    from paygrid.platform.roles import run_role

    if role not in ROLE_NAMES:
        err.print(f"[red]unknown role {role!r}; roles: {', '.join(ROLE_NAMES)}[/]")
        raise typer.Exit(2)
    run_role(role, resolve_settings(), copy)


def status(data_dir: DataDir = None, config_file: ConfigFile = None) -> None:
    """The production profile's processes: pid, uptime, restarts, last deaths."""
    path = resolve_settings(data_dir=data_dir, config=config_file).data_dir / "status.json"
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
