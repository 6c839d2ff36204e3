"""The channel's settlement against the bank statement (结算 vs 银行流水), through the
receivable the two meet in (应收应付): the channel owes its bill's net of a business date
(payments − refunds − fees) and pays it into the reserve account ``settle_days`` later, with
a reference naming the channel, the date and our merchant number at the channel.

For a channel's date D: the transfer is looked for on the bank statements of D + settle_days
up to ``window_days`` later (late is normal: matched, as it arrives). Found for the net:
matched, and the voucher "channel settles to reserve bank" is posted (once per transfer). For
another amount: ``SETTLEMENT_AMOUNT_MISMATCH``. Not on the statement of the day it was due:
``SETTLEMENT_MISSING`` (a later arrival resolves it). The due day's statement not in yet:
held (``SETTLEMENT_PENDING``). On the bank's side, a credit of the date that is no channel's
settlement is ``BANK_ONLY``.

Then the pending-clearing check: the channel's pending-clearing account moved on D by its
vouchers of D; it must have moved by the bill's net less the money that arrived on D
(``PENDING_CLEARING_MISMATCH``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
from sqlalchemy import select, text

from paygrid.channels.bank import BANK
from paygrid.channels.bank.settle import reference
from paygrid.kernel.clock import utcnow
from paygrid.ledger import repository as ledger_repository
from paygrid.ledger.domain import settlement_voucher
from paygrid.recon.bill_store import CURRENT, current_bill
from paygrid.recon.results import Difference
from paygrid.storage.database import Database
from paygrid.storage.schema import recon_bills

PostSettlement = Callable[[str, int, str, datetime], None]
"""(reference, amount, currency, value time) -> post "channel settles to reserve bank"."""
SETTLEMENT_WINDOW_DAYS = 3
SETTLE_DAYS = 1  # the channels settle T+1 (the sandboxes' default settle_days)


def poster(db: Database, channel: str, zone: str, cell: int = 0) -> PostSettlement:
    """Posts "channel settles to reserve bank" for a matched transfer, once per reference."""

    def post(ref: str, amount: int, currency: str, value_at: datetime) -> None:
        voucher = settlement_voucher(channel, ref, amount, currency)
        with db.transaction() as conn:
            ledger_repository.post(conn, voucher, utcnow(), value_at, zone, cell)

    return post


def settlement_differences(
    db: Database,
    data_dir: Path,
    channel: str,
    prefix: str,
    day: date,
    zone: str,
    explained: bool,
) -> tuple[list[Difference], list[Difference]]:
    """The settlement flow of ``channel``'s ``day`` and its pending-clearing check, which
    reports a gap only when no other difference of the run (``explained``) may account for
    it: the account's move is the control total over everything else."""
    post = poster(db, channel, zone)
    owed = expected(db, data_dir, channel, prefix, day)
    assert owed is not None, "a run reconciles a date whose bill is in"
    differences, held = settlement_flow(db, data_dir, owed, SETTLE_DAYS, post, zone)
    before = expected(db, data_dir, channel, prefix, day - timedelta(days=SETTLE_DAYS))
    references = []
    if before is not None:  # the money that arrives today: its voucher first (idempotent)
        settlement_flow(db, data_dir, before, SETTLE_DAYS, post, zone)
        references.append(before.reference)
    should = owed.net - arrived(db, data_dir, day, references)
    moved = pending_clearing_change(db, channel, day)
    if moved != should and not (explained or differences):
        differences.append(
            Difference("PENDING_CLEARING_MISMATCH", None, None, None, None, None, moved, should)
        )
    return differences, held


@dataclass(frozen=True, slots=True)
class Expected:
    """What the channel owes for a date (its bill's net) and how the transfer is named."""

    day: date
    net: int
    reference: str


def expected(db: Database, data_dir: Path, channel: str, prefix: str, day: date) -> Expected | None:
    """From the channel's current bill of ``day``; None without a bill."""
    bill = current_bill(db, channel, day)
    if bill is None:
        return None
    net = int(bill["payment_amount"]) - int(bill["refund_amount"]) - int(bill["fee"])
    stored = _sql(data_dir / bill["stored_path"])
    with duckdb.connect() as con:
        row = con.execute(f"SELECT min(channel_mchid) FROM read_parquet('{stored}')").fetchone()
    mchid = str(row[0]) if row and row[0] else ""
    return Expected(day, net, reference(prefix, day, mchid))


def settlement_flow(
    db: Database,
    data_dir: Path,
    owed: Expected,
    settle_days: int,
    post: PostSettlement,
    zone: str,
) -> tuple[list[Difference], list[Difference]]:
    """(differences, held) of the transfer for ``owed``; posts its voucher once matched."""
    if owed.net <= 0:
        return [], []  # nothing to pay: the channel carries it over
    due = owed.day + timedelta(days=settle_days)
    found = _entries(
        db, data_dir, due, due + timedelta(days=SETTLEMENT_WINDOW_DAYS), owed.reference
    )
    if found:
        value_date, amount, currency = found[0]
        if amount == owed.net:
            post(owed.reference, amount, currency, _start(value_date, zone))
            return [], []
        return [_difference("SETTLEMENT_AMOUNT_MISMATCH", owed, amount)], []
    if current_bill(db, BANK, due) is None:
        return [], [_difference("SETTLEMENT_PENDING", owed, None)]
    return [_difference("SETTLEMENT_MISSING", owed, None)], []


def arrived(db: Database, data_dir: Path, day: date, references: list[str]) -> int:
    """The money that arrived on ``day`` under these transfer references."""
    return sum(amount for _, amount, _ in _entries(db, data_dir, day, day, *references))


def bank_only(db: Database, data_dir: Path, day: date, prefixes: list[str]) -> list[Difference]:
    """Credits of ``day``'s statement that are no channel's settlement."""
    bill = current_bill(db, BANK, day)
    if bill is None:
        return []
    stored = _sql(data_dir / bill["stored_path"])
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT reference, amount, bank_reference "
            f"FROM read_parquet('{stored}') WHERE amount > 0"
        ).fetchall()
    return [
        Difference("BANK_ONLY", None, None, None, None, str(bank_ref), None, int(amount))
        for ref, amount, bank_ref in rows
        if not any(str(ref).startswith(p) for p in prefixes)
    ]


def pending_clearing_change(db: Database, channel: str, day: date) -> int:
    """How the channel's pending-clearing account moved by its vouchers of ``day`` (D − C)."""
    query = text(
        "SELECT coalesce(sum(CASE e.direction WHEN 'D' THEN e.amount ELSE -e.amount END), 0) "
        "FROM ledger_entries e JOIN ledger_vouchers v ON v.voucher_id = e.voucher_id "
        "WHERE v.business_date = :day AND e.account_code LIKE :code"
    )
    with db.read() as conn:
        moved = conn.execute(
            query, {"day": day.isoformat(), "code": f"pending_clearing:{channel}:%"}
        )
        return int(moved.scalar_one())


def _entries(
    db: Database, data_dir: Path, first: date, last: date, *references: str
) -> list[tuple[date, int, str]]:
    """(value date, amount, currency) of the statement entries under these references."""
    with db.read() as conn:
        paths = [
            str(data_dir / p)
            for p in conn.execute(
                select(recon_bills.c.stored_path).where(
                    recon_bills.c.channel == BANK,
                    recon_bills.c.status == CURRENT,
                    recon_bills.c.business_date >= first.isoformat(),
                    recon_bills.c.business_date <= last.isoformat(),
                )
            ).scalars()
        ]
    if not paths or not references:
        return []
    files = ", ".join(f"'{_sql(Path(p))}'" for p in paths)
    refs = ", ".join(f"'{r.replace(chr(39), '')}'" for r in references)
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT value_date, amount, currency FROM read_parquet([{files}]) "
            f"WHERE reference IN ({refs}) ORDER BY value_date"
        ).fetchall()
    return [(r[0], int(r[1]), str(r[2])) for r in rows]


def _difference(kind: str, owed: Expected, amount: int | None) -> Difference:
    return Difference(kind, None, None, None, None, owed.reference, owed.net, amount)


def _start(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), ZoneInfo(zone))


def _sql(path: Path) -> str:
    return str(path).replace("'", "''")
