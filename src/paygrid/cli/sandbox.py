"""``paygrid sandbox``: the channel sandboxes' credentials, one sandbox in the foreground."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer

from paygrid.channels import registry
from paygrid.cli.common import ConfigFile, DataDir, console, err, resolve_settings

app = typer.Typer(help="Channel sandboxes.", no_args_is_help=True)


def _sandbox_channel(channel: str) -> registry.ChannelSpec:
    try:
        return registry.spec(channel)
    except registry.UnknownChannel:
        err.print(f"[red]unknown channel {channel!r}; known: {', '.join(registry.NAMES)}[/]")
        raise typer.Exit(2) from None


@app.command("credentials")
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
    flags = {f"{channel}_base_url": url}
    settings = resolve_settings(data_dir=data_dir, config=config_file, **flags)
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


@app.command("serve")
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

    settings = resolve_settings(data_dir=data_dir, config=config_file)
    where = urlsplit(settings.channels[channel].base_url)
    spec.run_sandbox(
        settings.data_dir / "sandbox" / channel,
        host or where.hostname or "127.0.0.1",
        port or where.port or spec.default_port,
    )
