"""The `paygrid` command line (Typer): one module per command group."""

from __future__ import annotations

import typer

from paygrid import datadir
from paygrid.cli import (
    database,
    drill,
    merchant,
    notifications,
    payments,
    recon,
    routing,
    running,
    sandbox,
)

__all__ = ["app"]

app = typer.Typer(
    help="paygrid: the back office of a payment team.", no_args_is_help=True, add_completion=False
)
app.add_typer(merchant.app, name="merchant")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(notifications.app, name="notifications")
app.add_typer(drill.app, name="drill")
app.add_typer(recon.app, name="recon")
app.add_typer(routing.app, name="routing")
app.add_typer(payments.app, name="payments")
app.command()(running.up)
app.command(hidden=True)(running.run)
app.command()(running.status)
app.command()(database.migrate)
app.command()(database.check)


@app.callback()
def _private_files() -> None:
    # Everything paygrid and its children create is owner-only (docs/operations.md).
    datadir.restrict_umask()
