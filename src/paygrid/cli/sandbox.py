"""``paygrid sandbox``: the channel sandboxes' credentials, one sandbox in the foreground."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer

from paygrid.cli.common import ConfigFile, DataDir, console, err, resolve_settings

app = typer.Typer(help="Channel sandboxes.", no_args_is_help=True)
SANDBOX_CHANNELS = ("wechatpay",)


def _sandbox_channel(channel: str) -> str:
    if channel not in SANDBOX_CHANNELS:
        err.print(f"[red]unknown channel {channel!r}; known: {', '.join(SANDBOX_CHANNELS)}[/]")
        raise typer.Exit(2)
    return channel


@app.command("credentials")
def sandbox_credentials(
    channel: str,
    data_dir: DataDir = None,
    url: Annotated[
        str | None,
        typer.Option(help="The running sandbox's base URL (default $PAYGRID_WECHATPAY_BASE_URL)."),
    ] = None,
    config_file: ConfigFile = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print what a merchant of CHANNEL downloads from its merchant platform: keys and ids."""
    _sandbox_channel(channel)
    settings = resolve_settings(data_dir=data_dir, wechatpay_base_url=url, config=config_file)
    base = settings.wechatpay_base_url
    try:
        creds = httpx.get(f"{base}/sandbox/credentials", timeout=3.0).raise_for_status().json()
    except httpx.HTTPError:
        from paygrid.channels.wechatpay.sandbox import load_or_create_credentials

        creds = load_or_create_credentials(settings.data_dir / "sandbox" / channel)
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
        int | None, typer.Option(help="default: the port of $PAYGRID_WECHATPAY_BASE_URL")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="default: the host of $PAYGRID_WECHATPAY_BASE_URL")
    ] = None,
    config_file: ConfigFile = None,
) -> None:
    """Run one channel sandbox in the foreground; its state lives in DATA_DIR/sandbox/CHANNEL,
    where `paygrid up` keeps it."""
    _sandbox_channel(channel)
    from urllib.parse import urlsplit

    from paygrid.channels.wechatpay.sandbox import run

    settings = resolve_settings(data_dir=data_dir, config=config_file)
    where = urlsplit(settings.wechatpay_base_url)
    run(
        settings.data_dir / "sandbox" / channel,
        host or where.hostname or "127.0.0.1",
        port or where.port or 8101,
    )
