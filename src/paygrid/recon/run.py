"""A reconciliation run of one channel's business date (三方对账, first flow: paygrid's payments
and refunds against the channel's bill; the channel is the authority for status).

The bill is the CURRENT one in ``recon_bills``. paygrid's side is read from the database: its
successful payments of the date and refunds accepted that day, plus whatever the bill names
that paygrid holds on another date or in another state. :mod:`paygrid.recon.matching`
classifies every pair in DuckDB; the few that differ are then explained here:

- the channel has a success paygrid does not have yet: repaired through the payment's state
  machine (the channel is asked and its answer applied, as 补单 does: counted once, notified,
  posted), reported ``STATUS_REPAIRED``;
- a record booked on the neighbouring date by the channel (near the cut-off): matched there
  (``CROSS_DAY``: counted matched), or held (挂账) while the other date's bill may still bring
  it, within ``window_days``; only what is still unmatched after the window is a difference.

A run changes nothing but repairs, which are idempotent: running it again gives the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Connection, Select, String, and_, exists, select, type_coerce

from paygrid.kernel.clock import business_date, utcnow
from paygrid.recon.accounting import accounting_differences
from paygrid.recon.bill_store import DUCKDB_MEMORY_LIMIT, DUCKDB_THREADS, current_bill
from paygrid.recon.matching import OUR_PAYMENTS, OUR_REFUNDS, classify
from paygrid.recon.results import ChannelResult, Difference
from paygrid.recon.settlement import settlement_differences
from paygrid.reports.merchant_bill import day_bounds
from paygrid.storage.database import Database
from paygrid.storage.schema import channel_orders, payment_transitions, payments, refunds

REPAIR_CAUSE = "recon_repair"  # the cause of a repair: the bill told us, the channel confirmed
WINDOW_DAYS = 3  # held records wait this long for the neighbouring date's bill
CUTOFF_MARGIN = timedelta(minutes=30)  # "near the cut-off": may be booked on the other date
LOOKUP_CHUNK = 500
LOAD_BATCH = 50_000  # paygrid's rows fetched and handed to DuckDB at a time
DUCKDB_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "threads": DUCKDB_THREADS,
    "memory_limit": DUCKDB_MEMORY_LIMIT,
}
# paygrid's rows from one batch (_stream); paid_at is text (SQLite) or an aware datetime
_BATCH_VIEW = "paygrid_rows"
_PAYMENT_ROWS = f"""INSERT INTO our_payments SELECT channel_ref, payment_id, out_trade_no,
    amount, status, CAST(timezone($zone, CAST(paid_at AS TIMESTAMPTZ)) AS DATE),
    CAST(timezone('UTC', CAST(paid_at AS TIMESTAMPTZ)) AS TIMESTAMP),
    coalesce(CAST(repaired AS BOOLEAN), false)
FROM {_BATCH_VIEW}"""
_REFUND_ROWS = f"""INSERT INTO our_refunds SELECT channel_ref, refund_id, out_refund_no,
    payment_id, out_trade_no, amount, status, payment_ref,
    coalesce(CAST(repaired AS BOOLEAN), false)
FROM {_BATCH_VIEW}"""
VOUCHER_GRACE = timedelta(seconds=60)  # a success younger than this may be on its way to the ledger
# the references the bill names that paygrid's side of the date does not hold
_NAMED_ONLY = (
    "SELECT {ref} FROM bill WHERE kind = '{kind}' EXCEPT SELECT channel_ref FROM our_{ours}"
)
RepairPayment = Callable[[str, str], bool]
"""(payment_id, channel_ref) -> whether the channel's answer changed the payment."""
RepairRefund = Callable[[str, str, str], bool]
"""(refund_id, refund channel_ref, payment channel_ref) -> whether it changed the refund."""


class NoBill(LookupError):
    """No bill of this channel and date has been taken in (`recon fetch` / `import` first)."""


@dataclass(frozen=True, slots=True)
class Repairs:
    payment: RepairPayment
    refund: RepairRefund


def run_channel(
    db: Database,
    data_dir: Path,
    channel: str,
    day: date,
    *,
    zone: str,
    fee_rate_ppm: int,
    settlement_prefix: str,
    repairs: Repairs,
    now: datetime | None = None,
    voucher_grace: timedelta = VOUCHER_GRACE,
) -> ChannelResult:
    """Reconcile ``channel``'s ``day``: NoBill when its bill is not in."""
    bill_path = _current_bill(db, channel, day)
    with duckdb.connect(config=DUCKDB_CONFIG) as con:
        con.execute(  # a view: the bill is read where the join needs it, never copied whole
            f"CREATE TEMP VIEW bill AS SELECT * FROM read_parquet('{_sql(data_dir / bill_path)}')"
        )
        load_ours(con, db, channel, day, zone)
        classify(con, day.isoformat(), fee_rate_ppm)
        pay_rows = _rows(con, "SELECT * FROM pay_flow WHERE outcome <> 'MATCHED'")
        refund_rows = _rows(con, "SELECT * FROM refund_flow WHERE outcome <> 'MATCHED'")
        matched = _matched(con)
    neighbours = _neighbour_refs(db, data_dir, channel, day)
    explained = _explain(pay_rows, refund_rows, repairs, neighbours, day, zone, now or utcnow())
    differences, held, cross_day = explained
    settled = (now or utcnow()) - voucher_grace
    differences += accounting_differences(db, channel, day, zone, settled)
    settling, awaited = settlement_differences(
        db, data_dir, channel, settlement_prefix, day, zone, explained=bool(differences)
    )
    differences += settling
    held += awaited
    count, amount = matched
    crossed = frozenset(cross_day)
    return ChannelResult(
        channel,
        count + len(crossed),
        amount + sum(cross_day.values()),
        tuple(differences),
        tuple(held),
        crossed,
    )


def _current_bill(db: Database, channel: str, day: date) -> str:
    bill = current_bill(db, channel, day)
    if bill is None:
        raise NoBill(f"no {channel} bill of {day} taken in: `paygrid recon fetch` it first")
    return str(bill["stored_path"])


def load_ours(
    con: duckdb.DuckDBPyConnection, db: Database, channel: str, day: date, zone: str
) -> None:
    """paygrid's side: the date's successful payments and accepted refunds, and whatever else
    the bill names (another date, another state). Streamed in batches: memory stays bounded
    whatever the day's volume (bench/recon_ours.py)."""
    start, end = day_bounds(day, zone)
    con.execute("SET TimeZone = 'UTC'")  # a stored time without an offset is UTC
    con.execute(OUR_PAYMENTS)
    con.execute(OUR_REFUNDS)
    with db.read() as conn:
        _stream(con, conn, day_payments_query(channel, start, end), _PAYMENT_ROWS, zone)
        named = _missing(
            con, _NAMED_ONLY.format(ref="payment_ref", kind="PAYMENT", ours="payments")
        )
        for chunk in _chunks(named):
            where = channel_orders.c.channel_ref.in_(chunk)
            _stream(con, conn, _payments_query(channel, where), _PAYMENT_ROWS, zone)
        accepted = and_(refunds.c.created_at >= start, refunds.c.created_at < end)
        _stream(con, conn, _refunds_query(channel, accepted), _REFUND_ROWS, zone)
        named = _missing(con, _NAMED_ONLY.format(ref="refund_ref", kind="REFUND", ours="refunds"))
        for chunk in _chunks(named):
            where = refunds.c.channel_ref.in_(chunk)
            _stream(con, conn, _refunds_query(channel, where), _REFUND_ROWS, zone)


def day_payments_query(channel: str, start: datetime, end: datetime) -> Select[Any]:
    """The channel's successful payments paid within [start, end)."""
    paid = and_(
        payments.c.status == "SUCCESS", payments.c.paid_at >= start, payments.c.paid_at < end
    )
    return _payments_query(channel, paid)


def _payments_query(channel: str, where: Any) -> Select[Any]:
    return (
        select(
            channel_orders.c.channel_ref,
            payments.c.payment_id,
            payments.c.out_trade_no,
            payments.c.amount,
            payments.c.status,
            # as the driver gives it (SQLite: text, PostgreSQL: an aware datetime), turned
            # into a time by DuckDB: no conversion per row in Python
            type_coerce(payments.c.paid_at, String).label("paid_at"),
            exists()
            .where(
                payment_transitions.c.payment_id == payments.c.payment_id,
                payment_transitions.c.cause == REPAIR_CAUSE,
            )
            .label("repaired"),
        )
        .select_from(
            channel_orders.join(payments, payments.c.payment_id == channel_orders.c.payment_id)
        )
        .where(channel_orders.c.channel == channel, where)
    )


def _refunds_query(channel: str, where: Any) -> Select[Any]:
    return (
        select(
            refunds.c.channel_ref,
            refunds.c.refund_id,
            refunds.c.out_refund_no,
            refunds.c.payment_id,
            payments.c.out_trade_no,
            refunds.c.amount,
            refunds.c.status,
            channel_orders.c.channel_ref.label("payment_ref"),
            (refunds.c.cause == REPAIR_CAUSE).label("repaired"),
        )
        .select_from(
            refunds.join(payments, payments.c.payment_id == refunds.c.payment_id).join(
                channel_orders, channel_orders.c.order_id == refunds.c.order_id
            )
        )
        .where(refunds.c.channel == channel, where)
    )


def _stream(
    con: duckdb.DuckDBPyConnection, conn: Connection, query: Select[Any], insert: str, zone: str
) -> None:
    """``query``'s rows into DuckDB by ``insert``, LOAD_BATCH rows at a time, each batch as
    Arrow columns (DuckDB reads them in place; a list parameter per column took 4x as long)."""
    result = conn.execution_options(yield_per=LOAD_BATCH).execute(query)
    names = list(result.keys())
    for part in result.partitions():
        columns = zip(*part, strict=True)
        batch = pa.table({n: pa.array(list(c)) for n, c in zip(names, columns, strict=True)})
        con.register(_BATCH_VIEW, batch)
        try:
            con.execute(insert, {"zone": zone} if "$zone" in insert else None)
        finally:
            con.unregister(_BATCH_VIEW)


def _missing(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(r[0]) for r in con.execute(sql).fetchall() if r[0] is not None]


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + LOOKUP_CHUNK] for i in range(0, len(values), LOOKUP_CHUNK)]


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _matched(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Payments and refunds whose amounts agree (a fee difference is reported besides)."""
    row = con.execute(
        """SELECT
            (SELECT count(*) FROM pay_flow WHERE outcome IN ('MATCHED', 'FEE_MISMATCH'))
          + (SELECT count(*) FROM refund_flow WHERE outcome = 'MATCHED'),
            (SELECT coalesce(sum(channel_amount), 0) FROM pay_flow
                WHERE outcome IN ('MATCHED', 'FEE_MISMATCH'))
          - (SELECT coalesce(sum(channel_amount), 0) FROM refund_flow WHERE outcome = 'MATCHED')"""
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _neighbour_refs(db: Database, data_dir: Path, channel: str, day: date) -> set[str]:
    """The payment references on the neighbouring dates' current bills, where taken in."""
    paths: list[str] = []
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        bill = current_bill(db, channel, other)
        if bill is not None:
            paths.append(str(data_dir / bill["stored_path"]))
    if not paths:
        return set()
    with duckdb.connect() as con:
        files = ", ".join(f"'{_sql(Path(p))}'" for p in paths)
        rows = con.execute(
            f"SELECT DISTINCT payment_ref FROM read_parquet([{files}]) WHERE kind = 'PAYMENT'"
        ).fetchall()
    return {str(r[0]) for r in rows}


def _explain(
    pay_rows: list[dict[str, Any]],
    refund_rows: list[dict[str, Any]],
    repairs: Repairs,
    neighbours: set[str],
    day: date,
    zone: str,
    now: datetime,
) -> tuple[list[Difference], list[Difference], dict[str, int]]:
    """(differences, held, the amount of each payment matched across the cut-off)."""
    differences: list[Difference] = []
    held: list[Difference] = []
    cross: dict[str, int] = {}
    window_open = business_date(now, zone) <= day + timedelta(days=WINDOW_DAYS)
    for row in pay_rows:
        outcome = row["outcome"]
        if outcome == "CROSS_DAY" or (outcome == "PAYGRID_ONLY" and row["ref"] in neighbours):
            cross[str(row["payment_id"])] = int(row["paygrid_amount"])
            continue
        if outcome == "PAYGRID_ONLY" and window_open and _near_cutoff(row["paid_at"], day, zone):
            held.append(_payment_difference("CROSS_DAY_HELD", row))
            continue
        repaired = row["status"] == "SUCCESS"
        if outcome == "STATUS_REPAIRED" and not repaired:
            repaired = repairs.payment(str(row["payment_id"]), str(row["ref"]))
        differences.append(_payment_difference(outcome, row, repaired))
    for row in refund_rows:
        outcome = row["outcome"]
        if outcome == "PAYGRID_ONLY" and row["status"] != "SUCCESS":
            continue  # a refund the channel closed or still holds: no money moved
        repaired = row["status"] == "SUCCESS"
        if outcome == "STATUS_REPAIRED" and not repaired:
            payment_ref = str(row["payment_ref"] or "")
            repaired = repairs.refund(str(row["refund_id"]), str(row["ref"]), payment_ref)
        differences.append(_refund_difference(outcome, row, repaired))
    return differences, held, cross


def _near_cutoff(paid_at: datetime | None, day: date, zone: str) -> bool:
    """Paid within CUTOFF_MARGIN of the date's start or end (``paid_at`` naive UTC)."""
    if paid_at is None:
        return False
    start, end = day_bounds(day, zone)
    at = paid_at.replace(tzinfo=UTC)
    return at - start < CUTOFF_MARGIN or end - at <= CUTOFF_MARGIN


def _payment_difference(kind: str, row: dict[str, Any], repaired: bool = False) -> Difference:
    fee = kind == "FEE_MISMATCH"
    return Difference(
        kind,
        row["payment_id"],
        row["out_trade_no"],
        None,
        None,
        row["channel_trade_no"],
        row["paygrid_amount"],
        row["channel_amount"],
        expected_fee=int(row["expected_fee"]) if fee else None,
        channel_fee=int(row["channel_fee"]) if fee else None,
        repaired=repaired and kind == "STATUS_REPAIRED",
    )


def _refund_difference(kind: str, row: dict[str, Any], repaired: bool = False) -> Difference:
    return Difference(
        kind,
        row["payment_id"],
        row["out_trade_no"],
        row["refund_id"],
        row["out_refund_no"],
        row["channel_trade_no"],
        row["paygrid_amount"],
        row["channel_amount"],
        flow="REFUND",
        repaired=repaired and kind == "STATUS_REPAIRED",
    )


def _sql(path: Path) -> str:
    return str(path).replace("'", "''")
