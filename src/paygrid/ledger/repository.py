"""Ledger persistence: vouchers and entries are inserted, never updated; account totals move
in the same transaction and are re-derived from entries by `paygrid check`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, update

from paygrid.kernel.clock import business_date
from paygrid.kernel.ids import new_id
from paygrid.ledger.domain import Account, Direction, Voucher
from paygrid.storage.database import insert_ignoring_duplicates
from paygrid.storage.schema import ledger_accounts, ledger_entries, ledger_vouchers


def voucher_exists(conn: Connection, kind: str, business_ref: str) -> bool:
    return (
        conn.execute(
            select(ledger_vouchers.c.voucher_id).where(
                ledger_vouchers.c.kind == kind, ledger_vouchers.c.business_ref == business_ref
            )
        ).first()
        is not None
    )


def _ensure_account(conn: Connection, account: Account, now: datetime) -> None:
    conn.execute(
        insert_ignoring_duplicates(conn, ledger_accounts).values(
            code=account.code,
            name=account.name,
            kind=account.kind.value,
            currency=account.currency,
            debit_total=0,
            credit_total=0,
            created_at=now,
        )
    )


def post(
    conn: Connection,
    voucher: Voucher,
    at: datetime,
    business_at: datetime,
    zone: str,
    cell: int = 0,
) -> str:
    """Append a voucher with its entries; the unique (kind, business_ref) stops a second.
    ``business_at`` (e.g. paid_at) fixes its business date (账期), so late callbacks land in
    the day the money moved."""
    voucher_id = new_id("vch", cell)
    conn.execute(
        insert(ledger_vouchers).values(
            voucher_id=voucher_id,
            kind=voucher.kind,
            business_ref=voucher.business_ref,
            business_date=business_date(business_at, zone).isoformat(),
            memo=voucher.memo,
            created_at=at,
            parent_ref=voucher.parent_ref,
        )
    )
    accounts = {e.account.code: e.account for e in voucher.entries}
    for _, account in sorted(accounts.items()):
        _ensure_account(conn, account, at)
    conn.execute(
        insert(ledger_entries),
        [
            {
                "voucher_id": voucher_id,
                "account_code": e.account.code,
                "direction": e.direction.value,
                "amount": e.amount,
                "currency": e.account.currency,
            }
            for e in voucher.entries
        ],
    )
    totals: dict[str, list[int]] = {code: [0, 0] for code in accounts}
    for e in voucher.entries:
        totals[e.account.code][0 if e.direction == Direction.DEBIT else 1] += e.amount
    for code, (debit, credit) in sorted(totals.items()):  # one lock order: no deadlock
        conn.execute(
            update(ledger_accounts)
            .where(ledger_accounts.c.code == code)
            .values(
                debit_total=ledger_accounts.c.debit_total + debit,
                credit_total=ledger_accounts.c.credit_total + credit,
            )
        )
    return voucher_id


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
