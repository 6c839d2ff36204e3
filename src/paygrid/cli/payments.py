"""``paygrid payments show ID``: one payment as operators see it — its state history, its
channel orders and why routing chose each channel (never in the merchant's view)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    tool_database,
    tool_settings,
)
from paygrid.payments import repository
from paygrid.payments.domain import Payment
from paygrid.storage.schema import payment_transitions

app = typer.Typer(help="Payments (支付单) as operators see them.", no_args_is_help=True)


@app.command("show")
def show(
    payment_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """A payment, its transitions, its channel orders and their routing decisions."""
    db, _ = tool_database(tool_settings(data_dir, database_url, config_file))
    with db.read() as conn:
        payment = repository.get(conn, payment_id)
        steps = conn.execute(
            select(payment_transitions)
            .where(payment_transitions.c.payment_id == payment_id)
            .order_by(payment_transitions.c.id)
        ).all()
    if payment is None:
        err.print(f"[red]no payment {payment_id}[/]")
        raise typer.Exit(2)
    body = _json(payment, [(s.from_status, s.to_status, s.cause, s.at.isoformat()) for s in steps])
    if as_json:
        console.print_json(json.dumps(body, ensure_ascii=False))
        return
    console.print(
        f"{payment.payment_id} {payment.status.value} {payment.amount} {payment.currency} "
        f"merchant {payment.mchid} out_trade_no {payment.out_trade_no}"
    )
    history = Table("from", "to", "cause", "at (UTC)")
    for row in steps:
        history.add_row(row.from_status, row.to_status, row.cause, f"{row.at:%Y-%m-%d %H:%M:%S}")
    console.print(history)
    orders = Table("order", "channel", "method", "status", "routing")
    listed = body["orders"]
    assert isinstance(listed, list)
    for order in listed:
        route = order["route"]
        why = "named by the merchant or payer" if route is None else _route_text(route)
        orders.add_row(order["order_id"], order["channel"], order["method"], order["status"], why)
    console.print(orders)


def _json(payment: Payment, steps: list[tuple[str, str, str, str]]) -> dict[str, object]:
    return {
        "payment_id": payment.payment_id,
        "mchid": payment.mchid,
        "out_trade_no": payment.out_trade_no,
        "status": payment.status.value,
        "amount": payment.amount,
        "currency": payment.currency,
        "method": payment.method,
        "payer_bank": payment.payer_bank,
        "created_at": payment.created_at.isoformat(),
        "transitions": [{"from": f, "to": t, "cause": c, "at": a} for f, t, c, a in steps],
        "orders": [
            {
                "order_id": o.order_id,
                "channel": o.channel,
                "method": o.method,
                "status": o.status.value,
                "channel_ref": o.channel_ref,
                "channel_trade_no": o.channel_trade_no,
                "created_at": o.created_at.isoformat(),
                "route": json.loads(o.route) if o.route else None,
            }
            for o in payment.orders
        ],
    }


def _route_text(route: dict[str, object]) -> str:
    lines = [str(route.get("reason", ""))]
    out = route.get("out") or {}
    assert isinstance(out, dict)
    lines += [f"out: {channel}: {why}" for channel, why in out.items()]
    lines.append(f"bank {route.get('bank') or '-'}, config version {route.get('config_version')}")
    return "\n".join(lines)
