"""Merchant persistence."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, insert, select

from paygrid.merchants.domain import ApiKey, Merchant
from paygrid.storage.schema import merchant_keys, merchants


def _merchant(row: Row[Any]) -> Merchant:
    return Merchant(
        mchid=row.mchid,
        name=row.name,
        status=row.status,
        fee_rate_ppm=row.fee_rate_ppm,
        methods=tuple(m for m in row.methods.split(",") if m),
        created_at=row.created_at,
    )


def add(conn: Connection, merchant: Merchant, key: ApiKey) -> None:
    conn.execute(
        insert(merchants).values(
            mchid=merchant.mchid,
            name=merchant.name,
            status=merchant.status,
            fee_rate_ppm=merchant.fee_rate_ppm,
            methods=",".join(merchant.methods),
            created_at=merchant.created_at,
        )
    )
    conn.execute(
        insert(merchant_keys).values(
            key_id=key.key_id,
            mchid=key.mchid,
            secret=key.secret,
            status=key.status,
            created_at=merchant.created_at,
        )
    )


def get(conn: Connection, mchid: str) -> Merchant | None:
    row = conn.execute(select(merchants).where(merchants.c.mchid == mchid)).first()
    return _merchant(row) if row else None


def get_key(conn: Connection, mchid: str, key_id: str) -> ApiKey | None:
    row = conn.execute(
        select(merchant_keys).where(
            merchant_keys.c.key_id == key_id, merchant_keys.c.mchid == mchid
        )
    ).first()
    if row is None:
        return None
    return ApiKey(key_id=row.key_id, mchid=row.mchid, secret=row.secret, status=row.status)


def first_key(conn: Connection, mchid: str) -> ApiKey | None:
    row = conn.execute(
        select(merchant_keys)
        .where(merchant_keys.c.mchid == mchid, merchant_keys.c.status == "ACTIVE")
        .order_by(merchant_keys.c.created_at)
    ).first()
    if row is None:
        return None
    return ApiKey(key_id=row.key_id, mchid=row.mchid, secret=row.secret, status=row.status)
