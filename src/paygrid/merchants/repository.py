"""Merchant persistence. API secrets are stored sealed (merchants/vault.py), opened on lookup."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, or_, select, update

from paygrid.merchants.domain import ApiKey, Merchant
from paygrid.merchants.vault import Sealed, Vault
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


def _key(row: Row[Any], vault: Vault) -> ApiKey:
    secret = vault.open(row.mchid, row.key_id, Sealed(row.kek_id, row.sealed_secret))
    return ApiKey(
        key_id=row.key_id,
        mchid=row.mchid,
        secret=secret,
        status=row.status,
        expires_at=row.expires_at,
    )


def add(conn: Connection, merchant: Merchant, key: ApiKey, vault: Vault) -> None:
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
    add_key(conn, key, vault, merchant.created_at)


def add_key(conn: Connection, key: ApiKey, vault: Vault, created_at: datetime) -> None:
    sealed = vault.seal(key.mchid, key.key_id, key.secret)
    conn.execute(
        insert(merchant_keys).values(
            key_id=key.key_id,
            mchid=key.mchid,
            kek_id=sealed.kek_id,
            sealed_secret=sealed.blob,
            status=key.status,
            created_at=created_at,
            expires_at=key.expires_at,
        )
    )


def get(conn: Connection, mchid: str) -> Merchant | None:
    row = conn.execute(select(merchants).where(merchants.c.mchid == mchid)).first()
    return _merchant(row) if row else None


def get_for_update(conn: Connection, mchid: str) -> Merchant | None:
    """The merchant, its row locked until commit (serialises key rotations)."""
    row = conn.execute(
        select(merchants).where(merchants.c.mchid == mchid).with_for_update()
    ).first()
    return _merchant(row) if row else None


def get_key(conn: Connection, vault: Vault, mchid: str, key_id: str) -> ApiKey | None:
    row = conn.execute(
        select(merchant_keys).where(
            merchant_keys.c.key_id == key_id, merchant_keys.c.mchid == mchid
        )
    ).first()
    return _key(row, vault) if row is not None else None


def newest_key(conn: Connection, vault: Vault, mchid: str, now: datetime) -> ApiKey | None:
    """The merchant's newest key still valid at ``now``: the one notifications are signed with."""
    row = conn.execute(
        select(merchant_keys)
        .where(
            merchant_keys.c.mchid == mchid,
            merchant_keys.c.status == "ACTIVE",
            or_(merchant_keys.c.expires_at.is_(None), merchant_keys.c.expires_at > now),
        )
        .order_by(merchant_keys.c.created_at.desc(), merchant_keys.c.key_id.desc())
    ).first()
    return _key(row, vault) if row is not None else None


def expire_keys(conn: Connection, mchid: str, keep_key_id: str, at: datetime) -> list[str]:
    """Make every other active key of the merchant expire at ``at`` (or keep an earlier
    expiry); returns their key ids."""
    rows = conn.execute(
        update(merchant_keys)
        .where(
            merchant_keys.c.mchid == mchid,
            merchant_keys.c.key_id != keep_key_id,
            merchant_keys.c.status == "ACTIVE",
            or_(merchant_keys.c.expires_at.is_(None), merchant_keys.c.expires_at > at),
        )
        .values(expires_at=at)
        .returning(merchant_keys.c.key_id)
    ).all()
    return sorted(r.key_id for r in rows)


def kek_ids(conn: Connection) -> set[str]:
    """The KEKs the stored secrets are sealed under."""
    return set(conn.execute(select(merchant_keys.c.kek_id).distinct()).scalars())
