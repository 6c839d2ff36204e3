"""Ledger persistence: vouchers and entries are inserted, never updated.

A batch of vouchers is posted in a handful of statements (:func:`post_many`): the vouchers in
one, their entries in one, the accounts' running totals in one. The totals live in
``ledger_balances``, split over :data:`BALANCE_SHARDS` shards per account; a posting
transaction adds its batch's totals to the one shard it holds (:func:`balance_shard`), so no
row lock is shared by every posting (the hot account: 热点账户). An account's balance is the
sum of its shards; `paygrid check` re-derives it from the entries.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, select, text

from paygrid.kernel.clock import business_date
from paygrid.kernel.ids import new_id
from paygrid.ledger.domain import Account, Direction, Voucher
from paygrid.storage.database import insert_ignoring_duplicates
from paygrid.storage.schema import (
    ledger_accounts,
    ledger_balances,
    ledger_entries,
    ledger_vouchers,
)

BALANCE_SHARDS = 16  # > the ledger consumers one database serves at once
SHARD_LOCK_CLASS = 0x1ED9  # pg advisory lock namespace of the balance shards
MAX_POSTINGS = 1000  # vouchers in one post_many; a consumer's batch is far smaller

MAX_BOUND_PARAMETERS = 30_000  # SQLite allows 32,766 in one statement


@dataclass(frozen=True, slots=True)
class _Insert:
    """A raw multi-row INSERT: SQLAlchemy's per-row parameter handling costs more than the
    insert itself. PostgreSQL gets one array per column (unnest), SQLite VALUES (…), (…)."""

    table: str
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type)
    tail: str = ""

    def sql(self, dialect: str, rows: int) -> str:
        names = ", ".join(n for n, _ in self.columns)
        if dialect == "postgresql":
            arrays = ", ".join(f"%s::{t}[]" for _, t in self.columns)
            return f"INSERT INTO {self.table} ({names}) SELECT * FROM unnest({arrays}) {self.tail}"
        one = "(" + ", ".join("?" for _ in self.columns) + ")"
        return f"INSERT INTO {self.table} ({names}) VALUES {', '.join([one] * rows)} {self.tail}"


_VOUCHERS = _Insert(
    "ledger_vouchers",
    (
        ("voucher_id", "text"),
        ("kind", "text"),
        ("business_ref", "text"),
        ("business_date", "text"),
        ("memo", "text"),
        ("created_at", "timestamptz"),
        ("parent_ref", "text"),
    ),
    "ON CONFLICT DO NOTHING RETURNING voucher_id, kind, business_ref",
)
_ENTRIES = _Insert(
    "ledger_entries",
    (
        ("voucher_id", "text"),
        ("account_code", "text"),
        ("direction", "text"),
        ("amount", "bigint"),
        ("currency", "text"),
    ),
)
_BALANCES = _Insert(
    "ledger_balances",
    (("code", "text"), ("shard", "integer"), ("debit_total", "bigint"), ("credit_total", "bigint")),
    "ON CONFLICT (code, shard) DO UPDATE SET "
    "debit_total = ledger_balances.debit_total + excluded.debit_total, "
    "credit_total = ledger_balances.credit_total + excluded.credit_total",
)
_SHARD = text("SELECT pg_try_advisory_xact_lock(:cls, :shard)")
_SHARD_WAIT = text("SELECT pg_advisory_xact_lock(:cls, :shard)")


@dataclass(frozen=True, slots=True)
class Posting:
    """A voucher to post; ``business_at`` (e.g. paid_at) fixes its business date (账期), so
    late callbacks land in the day the money moved."""

    voucher: Voucher
    business_at: datetime


@dataclass(frozen=True, slots=True)
class Posted:
    voucher_ids: dict[tuple[str, str], str]  # (kind, business_ref) -> voucher_id, the new ones
    new_accounts: frozenset[str]  # account codes this transaction created


class AccountCache:
    """What one process knows without asking: the accounts that exist (learnt only after the
    transaction that saw or made them committed) and the balance shard it last held."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self.shard_hint = random.randrange(BALANCE_SHARDS)

    def unknown(self, accounts: Iterable[Account]) -> list[Account]:
        return [a for a in accounts if a.code not in self._known]

    def learn(self, codes: Iterable[str]) -> None:
        self._known.update(codes)


def post_many(
    conn: Connection,
    postings: Sequence[Posting],
    at: datetime,
    zone: str,
    cell: int = 0,
    cache: AccountCache | None = None,
) -> Posted:
    """Append the vouchers with their entries and add them to the accounts' totals, all in
    ``conn``'s transaction. A voucher whose (kind, business_ref) is already booked is skipped
    (the unique key stops a second): only the new ones are in the result."""
    assert len(postings) <= MAX_POSTINGS, len(postings)
    if not postings:
        return Posted({}, frozenset())
    cache = cache or AccountCache()
    accounts = {e.account.code: e.account for p in postings for e in p.voucher.entries}
    created = _ensure_accounts(conn, cache.unknown(accounts.values()), at)
    ids = _insert_vouchers(conn, postings, at, zone, cell)
    booked = [p.voucher for p in postings if (p.voucher.kind, p.voucher.business_ref) in ids]
    if booked:
        entries = [
            (ids[(v.kind, v.business_ref)], e.account.code, e.direction.value, e.amount, cur)
            for v in booked
            for e in v.entries
            for cur in (e.account.currency,)
        ]
        _insert_values(conn, _ENTRIES, entries)
        _add_to_balances(conn, booked, balance_shard(conn, cache))
    return Posted(ids, created)


def post(
    conn: Connection,
    voucher: Voucher,
    at: datetime,
    business_at: datetime,
    zone: str,
    cell: int = 0,
) -> str | None:
    """One voucher (see :func:`post_many`); its id, or None when it was already booked."""
    posted = post_many(conn, [Posting(voucher, business_at)], at, zone, cell)
    return posted.voucher_ids.get((voucher.kind, voucher.business_ref))


def _ensure_accounts(conn: Connection, accounts: list[Account], now: datetime) -> frozenset[str]:
    if accounts:
        conn.execute(
            insert_ignoring_duplicates(conn, ledger_accounts),
            [
                {
                    "code": a.code,
                    "name": a.name,
                    "kind": a.kind.value,
                    "currency": a.currency,
                    "created_at": now,
                }
                for a in sorted(accounts, key=lambda a: a.code)  # one lock order
            ],
        )
    return frozenset(a.code for a in accounts)


def _insert_vouchers(
    conn: Connection, postings: Sequence[Posting], at: datetime, zone: str, cell: int
) -> dict[tuple[str, str], str]:
    created_at = ledger_vouchers.c.created_at.type.bind_processor(conn.dialect)
    stamp = created_at(at) if created_at else at
    rows = [
        (
            new_id("vch", cell),
            p.voucher.kind,
            p.voucher.business_ref,
            business_date(p.business_at, zone).isoformat(),
            p.voucher.memo,
            stamp,
            p.voucher.parent_ref,
        )
        for p in postings
    ]
    returned = _insert_values(conn, _VOUCHERS, rows)
    return {(kind, ref): voucher_id for voucher_id, kind, ref in returned}


def _insert_values(
    conn: Connection, insert: _Insert, rows: Sequence[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` in one statement (SQLite: as many as its bound-parameter limit
    allows); the rows the statement returns."""
    dialect = conn.dialect.name
    chunks = [rows]
    if dialect != "postgresql":
        per = MAX_BOUND_PARAMETERS // len(insert.columns)
        chunks = [rows[i : i + per] for i in range(0, len(rows), per)]
    out: list[tuple[Any, ...]] = []
    if dialect == "sqlite" and not insert.tail:  # nothing returned: one prepared row, many
        conn.exec_driver_sql(insert.sql(dialect, 1), list(rows))
        return out
    for chunk in chunks:
        if dialect == "postgresql":
            params = tuple(list(column) for column in zip(*chunk, strict=True))
        else:
            params = tuple(v for row in chunk for v in row)
        result = conn.exec_driver_sql(insert.sql(dialect, len(chunk)), params)
        if result.returns_rows:
            out.extend(tuple(r) for r in result)
    return out


def balance_shard(conn: Connection, cache: AccountCache) -> int:
    """The shard of every account's totals this transaction adds to. On PostgreSQL it holds
    the shard's advisory lock until the transaction ends, trying the shards without waiting
    from the one it held last, so concurrent postings take different shards and never queue
    on a row; only with more concurrent postings than shards does one wait. SQLite has one
    writer at a time: shard 0."""
    if conn.dialect.name != "postgresql":
        return 0
    start = cache.shard_hint
    for i in range(BALANCE_SHARDS):
        shard = (start + i) % BALANCE_SHARDS
        if conn.execute(_SHARD, {"cls": SHARD_LOCK_CLASS, "shard": shard}).scalar():
            cache.shard_hint = shard
            return shard
    conn.execute(_SHARD_WAIT, {"cls": SHARD_LOCK_CLASS, "shard": start})
    return start


def _add_to_balances(conn: Connection, vouchers: Sequence[Voucher], shard: int) -> None:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in vouchers:
        for e in v.entries:
            totals[e.account.code][0 if e.direction == Direction.DEBIT else 1] += e.amount
    rows = [(code, shard, d, c) for code, (d, c) in sorted(totals.items())]  # one lock order
    _insert_values(conn, _BALANCES, rows)


def balances(conn: Connection, codes: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """(debit total, credit total) of each account (of ``codes``, or all): its shards summed."""
    query = select(
        ledger_balances.c.code,
        func.sum(ledger_balances.c.debit_total),
        func.sum(ledger_balances.c.credit_total),
    ).group_by(ledger_balances.c.code)
    if codes is not None:
        query = query.where(ledger_balances.c.code.in_(list(codes)))
    return {code: (int(d), int(c)) for code, d, c in conn.execute(query)}


def voucher_exists(conn: Connection, kind: str, business_ref: str) -> bool:
    return (
        conn.execute(
            select(ledger_vouchers.c.voucher_id).where(
                ledger_vouchers.c.kind == kind, ledger_vouchers.c.business_ref == business_ref
            )
        ).first()
        is not None
    )


def booked(
    conn: Connection, kind: str, business_ref: str, account: Account, direction: Direction
) -> int | None:
    """What the voucher (kind, business_ref) booked on ``account`` in ``direction``; None when
    there is no such voucher. On PostgreSQL the voucher row is locked until the transaction
    ends, so the refunds of one payment are booked one after the other."""
    voucher = select(ledger_vouchers.c.voucher_id).where(
        ledger_vouchers.c.kind == kind, ledger_vouchers.c.business_ref == business_ref
    )
    if conn.dialect.name == "postgresql":
        voucher = voucher.with_for_update()
    voucher_id = conn.execute(voucher).scalar()
    if voucher_id is None:
        return None
    return _sum(conn, [voucher_id], account, direction)


def booked_under(
    conn: Connection, kind: str, parent_ref: str, account: Account, direction: Direction
) -> int:
    """What every voucher of ``kind`` belonging to ``parent_ref`` booked on ``account``."""
    ids = select(ledger_vouchers.c.voucher_id).where(
        ledger_vouchers.c.kind == kind, ledger_vouchers.c.parent_ref == parent_ref
    )
    return _sum(conn, ids, account, direction)


def _sum(
    conn: Connection,
    voucher_ids: Sequence[str] | Select[Any],
    account: Account,
    direction: Direction,
) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
            ledger_entries.c.voucher_id.in_(voucher_ids),
            ledger_entries.c.account_code == account.code,
            ledger_entries.c.direction == direction.value,
        )
    ).scalar_one()
    return int(total)
