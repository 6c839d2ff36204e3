"""Agreements in the database: insert once per (merchant, out_agreement_no), save with an
optimistic version check."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from paygrid.agreements.domain import Agreement, AgreementStatus
from paygrid.storage.schema import agreements


class ConcurrentChange(Exception):
    """Someone else changed the agreement since it was read."""


def _agreement(row: Row[Any]) -> Agreement:
    return Agreement(
        agreement_id=row.agreement_id,
        mchid=row.mchid,
        out_agreement_no=row.out_agreement_no,
        channel=row.channel,
        bank=row.bank,
        masked_account=row.masked_account,
        status=AgreementStatus(row.status),
        agreement_no=row.agreement_no,
        message=row.message,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def add(conn: Connection, a: Agreement, request_hash: str) -> None:
    conn.execute(
        insert(agreements).values(
            agreement_id=a.agreement_id,
            mchid=a.mchid,
            out_agreement_no=a.out_agreement_no,
            channel=a.channel,
            bank=a.bank,
            masked_account=a.masked_account,
            status=a.status.value,
            agreement_no=a.agreement_no,
            message=a.message,
            request_hash=request_hash,
            created_at=a.created_at,
            updated_at=a.updated_at,
            version=a.version,
        )
    )


def save(conn: Connection, before: Agreement, after: Agreement) -> None:
    assert after.agreement_id == before.agreement_id and after.version == before.version + 1
    done = conn.execute(
        update(agreements)
        .where(
            agreements.c.agreement_id == before.agreement_id,
            agreements.c.version == before.version,
        )
        .values(
            status=after.status.value,
            agreement_no=after.agreement_no,
            masked_account=after.masked_account,
            message=after.message,
            updated_at=after.updated_at,
            version=after.version,
        )
    )
    if done.rowcount != 1:
        raise ConcurrentChange(before.agreement_id)


def get(conn: Connection, agreement_id: str) -> Agreement | None:
    row = conn.execute(select(agreements).where(agreements.c.agreement_id == agreement_id)).first()
    return _agreement(row) if row else None


def find(conn: Connection, mchid: str, out_agreement_no: str) -> tuple[Agreement, str] | None:
    """The merchant's agreement of that number, and the hash of the request that made it."""
    row = conn.execute(
        select(agreements).where(
            agreements.c.mchid == mchid, agreements.c.out_agreement_no == out_agreement_no
        )
    ).first()
    return (_agreement(row), row.request_hash) if row else None
