"""Read the reserve account's MT940 statement of a date into recon's bank table: one row per
entry (value date, signed amount, references, payer), after :mod:`statement` checked it adds
up. A statement of another date, or one that does not add up, is refused whole."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from paygrid.channels.bank.statement import MAX_BYTES, StatementError, parse_mt940
from paygrid.recon.bill_format import BillRefused, BillTotals

BANK_COLUMNS = (
    ("value_date", "DATE"),
    ("amount", "BIGINT"),  # fen, positive for money in
    ("currency", "VARCHAR"),
    ("reference", "VARCHAR"),  # the payer's (a channel's settlement reference)
    ("bank_reference", "VARCHAR"),
    ("details", "VARCHAR"),
    ("account", "VARCHAR"),
)


def import_bill(con: duckdb.DuckDBPyConnection, path: Path, day: date, table: str) -> BillTotals:
    """Create ``table`` from the statement at ``path`` of ``day``; BillRefused when bad.
    Totals: credits as "payments", debits as "refunds" (their amounts positive)."""
    if path.stat().st_size > MAX_BYTES:
        raise BillRefused(path.name, 0, "", f"larger than {MAX_BYTES} bytes")
    try:
        statement = parse_mt940(path.read_bytes(), path.name)
    except StatementError as exc:
        raise BillRefused(path.name, 0, "", str(exc).removeprefix(f"{path.name}: ")) from None
    if statement.statement_date != day:
        raise BillRefused(
            path.name, 0, ":62F:", f"the statement of {statement.statement_date}, not of {day}"
        )
    columns = ", ".join(f"{name} {kind}" for name, kind in BANK_COLUMNS)
    con.execute(f"CREATE TEMP TABLE {table} ({columns})")
    rows = [
        (
            e.value_date,
            e.amount,
            statement.currency,
            e.reference,
            e.bank_reference,
            e.details,
            statement.account,
        )
        for e in statement.entries
    ]
    if rows:
        con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    credits = [e.amount for e in statement.entries if e.amount > 0]
    debits = [-e.amount for e in statement.entries if e.amount < 0]
    return BillTotals(len(rows), len(credits), sum(credits), len(debits), sum(debits), 0)
