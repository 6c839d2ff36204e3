"""Ledger persistence: vouchers and entries are inserted, never updated; account totals move
in the same transaction and are re-derived from entries by `paygrid check`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from paygrid.kernel.clock import business_date
from paygrid.kernel.ids import new_id
from paygrid.ledger.domain import Account, Direction, Voucher
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
    exists = conn.execute(
        select(ledger_accounts.c.code).where(ledger_accounts.c.code == account.code)
    ).first()
    if exists is None:
        conn.execute(
            insert(ledger_accounts).values(
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
        )
    )
    for entry in voucher.entries:
        _ensure_account(conn, entry.account, at)
        conn.execute(
            insert(ledger_entries).values(
                voucher_id=voucher_id,
                account_code=entry.account.code,
                direction=entry.direction.value,
                amount=entry.amount,
                currency=entry.account.currency,
            )
        )
        column = "debit_total" if entry.direction == Direction.DEBIT else "credit_total"
        conn.execute(
            update(ledger_accounts)
            .where(ledger_accounts.c.code == entry.account.code)
            .values({column: ledger_accounts.c[column] + entry.amount})
        )
    return voucher_id
