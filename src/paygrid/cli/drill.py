"""``paygrid drill``: fault drills against a production profile of their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from paygrid.cli.common import console, err

app = typer.Typer(help="Fault drills.", no_args_is_help=True)


@app.command("crash")
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
    copies: Annotated[
        str, typer.Option(help="More copies of stateless roles, ROLE=N,... (e.g. api=2).")
    ] = "",
) -> None:
    """Start the production profile, drive payments while SIGKILLing random processes (and
    NATS and PostgreSQL once), then check that nothing was lost or counted twice. The drill's
    platform is its own (fresh PostgreSQL, NATS, ports): it reads no PAYGRID_* setting."""
    from paygrid.config import parse_copies
    from paygrid.ops.drill import run_drill, summary

    if not (1 <= payments <= 1000 and 5 <= seconds <= 600):
        err.print("[red]--payments must be 1..1000 and --seconds 5..600[/]")
        raise typer.Exit(2)
    try:
        parse_copies(copies)
    except ValueError as exc:
        err.print(f"[red]--copies: {exc}[/]")
        raise typer.Exit(2) from None
    report = run_drill(payments, seconds, seed, data_dir, lambda line: console.print(line), copies)
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


@app.command("cutover")
def drill_cutover(
    payments: Annotated[int, typer.Option(help="Payments per step (10-100).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the sandbox's faults.")] = 1,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the drill's platform lives; default a new temp dir."
        ),
    ] = None,
) -> None:
    """Rehearse a cut-over (切量) under load on a platform of its own: one bank's payments move
    from the incumbent channel to the newcomer, 1% -> 5% -> 20% -> 50%; at 50% the newcomer
    degrades for that bank; failover and the breaker move traffic back, probes bring it in
    again once healed; then every payment is checked paid exactly once."""
    import tempfile

    from rich.table import Table

    from paygrid.ops.drill_cutover import run_cutover, summary

    if not 10 <= payments <= 100:
        err.print("[red]--payments must be 10..100[/]")
        raise typer.Exit(2)
    where = data_dir or Path(tempfile.mkdtemp(prefix="paygrid-cutover-"))
    report = run_cutover(payments, seed, where, lambda line: console.print(line))
    result = summary(report)
    table = Table("phase", "weight", "payments", "routed to newcomer", "paid through",
                  "failovers", "out by breaker", title=result["cutover"])  # fmt: skip
    for row in result["phases"]:
        table.add_row(
            row["phase"], f"{row['weight_pct']}%", str(row["payments"]),
            f"{row['routed_to_newcomer_pct']}%",
            " / ".join(f"{c} {n}" for c, n in sorted(row["paid_through"].items())),
            str(row["failovers"]), str(row["newcomer_out_by_breaker"]),
        )  # fmt: skip
    console.print(table)
    console.print(json.dumps(result))
    if report.ok:
        console.print("[bold green]drill passed[/]: traffic moved and came back; each payment "
                      "was paid exactly once")  # fmt: skip
        return
    for problem in report.problems[:50]:
        err.print(f"[red]{problem}[/]")
    err.print(f"drill FAILED with {len(report.problems)} problem(s)")
    raise typer.Exit(1)
