"""``paygrid recon sku``: per-SKU reconciliation (按商品对账) of a business date. Per merchant and
SKU: quantity sold, sales (list value), discount, paid, refunds, the channels' fee and the net,
split from what the channels' bills confirmed, adding up exactly to each merchant's
channel-confirmed totals (``paygrid.recon.sku_report``). Registered in ``cli/recon.py``."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

import typer
from rich.table import Table

from paygrid.channels import registry
from paygrid.cli.common import (
    ConfigFile,
    DataDir,
    DbUrl,
    console,
    err,
    tool_database,
    tool_settings,
)
from paygrid.merchants import repository as merchants
from paygrid.recon.sku_report import NoBills, sku_figures
from paygrid.recon.sku_results import MerchantFigures, SkuFigures, Totals

Day = Annotated[str, typer.Option("--date", help="The business date, YYYY-MM-DD.")]
Mchid = Annotated[str | None, typer.Option("--mchid", help="One merchant (default all).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
EXIT_BAD = 2  # bad arguments, or no bill of the date to split
FIGURES = ("quantity", "sales", "discount", "paid", "refund_quantity", "refund", "fee", "net")
HEADERS = ("qty", "sales", "discount", "paid", "ref.qty", "refund", "fee", "net")


def sku(
    day: Day,
    mchid: Mchid = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    config_file: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """Per-SKU figures of a business date per merchant (按商品对账), split from the channels'
    bills: they add up exactly to each merchant's channel-confirmed totals. Lines of no paygrid
    payment are counted as unattributed. Exit 2 on bad arguments or when no channel's bill of
    the date has been taken in (`paygrid recon fetch` it first)."""
    business_date = _date(day)
    settings = tool_settings(data_dir, database_url, config_file)
    db, _ = tool_database(settings)
    try:
        if mchid is not None:
            with db.read() as conn:
                if merchants.get(conn, mchid) is None:
                    err.print(f"[red]--mchid {mchid!r}: no such merchant[/]")
                    raise typer.Exit(EXIT_BAD)
        figures = sku_figures(db, settings.data_dir, business_date, mchid)
    except NoBills:
        err.print(
            f"[red]no bill of {day} taken in for any channel ({', '.join(registry.NAMES)}): "
            f"`paygrid recon fetch --channel C --date {day}` first[/]"
        )
        raise typer.Exit(EXIT_BAD) from None
    finally:
        db.dispose()
    missing = [name for name in registry.NAMES if name not in figures.channels]
    if missing:
        err.print(f"no bill of {day} for {', '.join(missing)}: not in these figures (recon fetch)")
    if as_json:
        print(json.dumps(figures.as_json() | {"missing": missing}, ensure_ascii=False))
        return
    _print(figures)


def _print(figures: SkuFigures) -> None:
    day = figures.business_date.isoformat()
    for merchant in figures.merchants:
        console.print(_merchant_table(day, merchant))
    if not figures.merchants:
        console.print(f"{day}: no merchant's payment or refund on the bills")
    for bill in figures.bills:
        console.print(f"{bill.channel} bill {bill.bill_id}: {_totals(bill.totals)}")
        if bill.unattributed is not None:
            console.print(f"  unattributed (no paygrid payment): {_totals(bill.unattributed)}")


def _merchant_table(day: str, merchant: MerchantFigures) -> Table:
    table = Table(title=f"{merchant.mchid} {day} per SKU (fen)", title_justify="left")
    table.add_column("sku", min_width=9, overflow="fold")
    for header in HEADERS:
        table.add_column(header, justify="right", no_wrap=True)
    for row in merchant.skus:
        table.add_row(row.sku, *(str(getattr(row, name)) for name in FIGURES))
    c = merchant.confirmed
    confirmed = ["", "", "", c.payment_amount, "", c.refund_amount, c.fee, c.net]
    table.add_section()
    table.add_row("confirmed", *(str(v) for v in confirmed), style="bold")
    return table


def _totals(t: Totals) -> str:
    return (
        f"{t.payments} payments {t.payment_amount} fen, {t.refunds} refunds "
        f"{t.refund_amount} fen, fee {t.fee} fen, net {t.net} fen"
    )


def _date(text: str) -> date:
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
    except ValueError:
        pass
    err.print(f"[red]--date {text!r}: a date YYYY-MM-DD[/]")
    raise typer.Exit(EXIT_BAD)
