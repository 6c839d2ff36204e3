"""Per-SKU daily figures (按商品对账): what each merchant sold, discounted, was paid, refunded and
was charged per product on a business date, adding up exactly to what the channels confirmed.

The figures start from each channel's CURRENT bill of the date: its amounts and fees are the
authority, not paygrid's. The bill's lines are read with DuckDB in batches of
:data:`BATCH_LINES`; each batch is mapped to paygrid's records by SQL lookups of at most
:data:`LOOKUP_CHUNK` references (a payment by its channel order's reference, a refund by its
reference at the channel), never one query per line. Each line is then split over the order's
lines by :mod:`paygrid.recon.sku` (largest remainder, no fen lost or created):

- a PAYMENT line: the bill's amount and fee over the payment's items after its discounts;
- a REFUND line: the bill's amount and the fee it gives back (negative) over the lines the
  refund names (all lines when it names none); a refund paygrid has no record of, on a payment
  it has, over all the payment's lines; a refund whose named items carry no value, over all
  lines too, keeping the quantities it named.

A line paygrid has no payment for (``CHANNEL_ONLY``, 长款) belongs to no merchant: it is in no
merchant's figures but counted per bill as ``unattributed``, so that the merchants' figures
plus the unattributed ones add up to each bill's own totals. Both ties are checked on every
report (:class:`NotTied` otherwise, a bug): each merchant's SKUs add up to its confirmed
totals, and every bill's lines are all accounted for. Amounts are fen (the channels settle in
CNY only).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Connection, select

from paygrid.channels.bank import BANK
from paygrid.recon.bill_format import PAYMENT
from paygrid.recon.bill_store import CURRENT, bills
from paygrid.recon.sku import Line, order_lines, payment_shares, refund_shares_or_spread
from paygrid.recon.sku_results import BillFigures, NotTied, SkuFigures, Tally, Totals, count_line
from paygrid.storage.database import Database
from paygrid.storage.schema import channel_orders, payments, refunds

BATCH_LINES = 10_000  # bill lines read, looked up and split at a time
LOOKUP_CHUNK = 500  # references per SQL lookup


class NoBills(LookupError):
    """No channel's bill of the date has been taken in."""


def sku_figures(
    db: Database,
    data_dir: Path,
    day: date,
    mchid: str | None = None,
    channels: Sequence[str] | None = None,
) -> SkuFigures:
    """Per merchant (or only ``mchid``), per SKU, the figures of ``day`` from the current bill
    of every channel taken in (or of ``channels``); NoBills when there is none."""
    current = [
        b
        for b in bills(db, day=day)
        if b["status"] == CURRENT
        and b["channel"] != BANK
        and (channels is None or b["channel"] in channels)
    ]
    if not current:
        raise NoBills(f"no bill of {day} taken in")
    tally = Tally()
    read = [_read_bill(db, data_dir, bill, mchid, tally) for bill in sorted(current, key=_channel)]
    merchants = tally.merchants()
    attributed = sum((b.attributed for b in read), Totals())
    if sum((m.confirmed for m in merchants), Totals()) != attributed:
        raise NotTied(f"{day}: the merchants' totals are not the bills' attributed lines")
    return SkuFigures(day, tuple(read), merchants)


# --- reading one bill -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Order:
    """A paygrid payment as its lines are split: its merchant, lines and order discount."""

    mchid: str
    lines: tuple[Line, ...]
    discount: int
    total: int  # paygrid's total: what its refunds are weighed by


_ORDER_COLUMNS = (
    payments.c.mchid,
    payments.c.amount,
    payments.c["items"].label("payment_items"),  # not .c.items: the collection's own method
    payments.c.discounts,
)
# kind, payment_ref, refund_ref, amount, fee
BillLine = tuple[str, str | None, str | None, int, int]


def _read_bill(
    db: Database, data_dir: Path, bill: Mapping[str, Any], mchid: str | None, tally: Tally
) -> BillFigures:
    channel = str(bill["channel"])
    seen = _Seen()
    path = str(data_dir / str(bill["stored_path"])).replace("'", "''")
    with duckdb.connect() as con:
        cursor = con.execute(
            f"SELECT kind, payment_ref, refund_ref, amount, fee FROM read_parquet('{path}')"
        )
        while batch := cursor.fetchmany(BATCH_LINES):
            lines = [(str(k), p, r, int(a), int(f)) for k, p, r, a, f in batch]
            with db.read() as conn:
                _split_batch(conn, channel, lines, mchid, tally, seen)
    totals = Totals(
        *(int(bill[k]) for k in ("payments", "payment_amount", "refunds", "refund_amount", "fee"))
    )
    attributed, unattributed = seen.totals(0), seen.totals(1)
    if mchid is None and attributed + unattributed != totals:
        raise NotTied(f"{channel} {bill['business_date']}: lines split are not the bill's totals")
    return BillFigures(
        channel, str(bill["bill_id"]), totals, attributed, None if mchid else unattributed
    )


def _split_batch(
    conn: Connection,
    channel: str,
    lines: Sequence[BillLine],
    mchid: str | None,
    tally: Tally,
    seen: _Seen,
) -> None:
    """Look the batch's references up (in chunks), then split each line over its order."""
    refund_refs = {r for k, _, r, _, _ in lines if k != PAYMENT and r is not None}
    known = _refunds_by_ref(conn, channel, refund_refs, mchid)
    payment_refs = {
        p for k, p, r, _, _ in lines if p is not None and (k == PAYMENT or r not in known)
    }
    orders = _payments_by_ref(conn, channel, payment_refs, mchid)
    for kind, payment_ref, refund_ref, amount, fee in lines:
        is_payment = kind == PAYMENT
        if is_payment:
            order = orders.get(payment_ref or "")
            if order is not None:
                shares = payment_shares(order.lines, order.discount, amount, fee)
                tally.add(order.mchid, shares, is_payment, amount, fee)
        else:
            order, named = known.get(refund_ref or "") or (orders.get(payment_ref or ""), None)
            if order is not None:
                paid = payment_shares(order.lines, order.discount, order.total, 0)
                shares = refund_shares_or_spread(paid, named, amount, fee)
                tally.add(order.mchid, shares, is_payment, amount, fee)
        seen.add(order is None, is_payment, amount, fee)


def _payments_by_ref(
    conn: Connection, channel: str, refs: Iterable[str], mchid: str | None
) -> dict[str, _Order]:
    found: dict[str, _Order] = {}
    joined = channel_orders.join(payments, payments.c.payment_id == channel_orders.c.payment_id)
    for chunk in _chunks(refs):
        query = (
            select(channel_orders.c.channel_ref, *_ORDER_COLUMNS)
            .select_from(joined)
            .where(channel_orders.c.channel == channel, channel_orders.c.channel_ref.in_(chunk))
        )
        if mchid is not None:
            query = query.where(payments.c.mchid == mchid)
        for row in conn.execute(query):
            found[row.channel_ref] = _order(row)
    return found


def _refunds_by_ref(
    conn: Connection, channel: str, refs: Iterable[str], mchid: str | None
) -> dict[str, tuple[_Order, dict[str, int] | None]]:
    """Each known refund's order, and the quantity per SKU it names (None: no items)."""
    found: dict[str, tuple[_Order, dict[str, int] | None]] = {}
    joined = refunds.join(payments, payments.c.payment_id == refunds.c.payment_id)
    for chunk in _chunks(refs):
        query = (
            select(refunds.c.channel_ref, refunds.c["items"].label("refund_items"), *_ORDER_COLUMNS)
            .select_from(joined)
            .where(refunds.c.channel == channel, refunds.c.channel_ref.in_(chunk))
        )
        if mchid is not None:
            query = query.where(refunds.c.mchid == mchid)
        for row in conn.execute(query):
            found[row.channel_ref] = (_order(row), _named(row.refund_items))
    return found


def _order(row: Any) -> _Order:
    """The payment's lines as stored at creation (JSON, amounts in fen)."""
    total = int(row.amount)
    items = json.loads(row.payment_items) if row.payment_items else []
    lines = [Line(str(i["sku"]), int(i["quantity"]), int(i["unit_amount"])) for i in items]
    discounts = json.loads(row.discounts) if row.discounts else []
    off = sum(int(d["amount"]) for d in discounts)
    return _Order(str(row.mchid), tuple(order_lines(lines, total)), off, total)


def _named(items: str | None) -> dict[str, int] | None:
    if not items:
        return None
    named: dict[str, int] = {}
    for item in json.loads(items):
        named[str(item["sku"])] = named.get(str(item["sku"]), 0) + int(item["quantity"])
    return named


class _Seen:
    """A bill's lines as they were split: [attributed, unattributed] Totals as lists."""

    def __init__(self) -> None:
        self.parts = [[0] * 5, [0] * 5]

    def add(self, unattributed: bool, is_payment: bool, amount: int, fee: int) -> None:
        count_line(self.parts[unattributed], is_payment, amount, fee)

    def totals(self, part: int) -> Totals:
        return Totals(*self.parts[part])


def _chunks(refs: Iterable[str]) -> list[list[str]]:
    values = sorted(refs)
    return [values[i : i + LOOKUP_CHUNK] for i in range(0, len(values), LOOKUP_CHUNK)]


def _channel(bill: Mapping[str, Any]) -> str:
    return str(bill["channel"])
