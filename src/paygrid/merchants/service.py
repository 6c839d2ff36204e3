"""Merchant use cases: onboarding (进件) with a first API key; key rotation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from paygrid.kernel.clock import utcnow
from paygrid.merchants import repository
from paygrid.merchants.domain import (
    DEFAULT_FEE_RATE_PPM,
    MAX_ROTATION_GRACE,
    ApiKey,
    Merchant,
    new_api_key,
    new_mchid,
)
from paygrid.merchants.vault import Vault
from paygrid.storage.database import Database

MAX_NAME_LEN = 128


@dataclass(frozen=True, slots=True)
class Onboarded:
    merchant: Merchant
    key: ApiKey

    def credentials(self) -> dict[str, str]:
        """What the merchant keeps: the shape of ``demo-merchant.json``."""
        return {
            "mchid": self.merchant.mchid,
            "key_id": self.key.key_id,
            "secret": self.key.secret,
            "name": self.merchant.name,
        }


class MerchantNotFound(Exception):
    pass


def create_merchant(
    db: Database,
    vault: Vault,
    name: str,
    fee_rate_ppm: int = DEFAULT_FEE_RATE_PPM,
    *,
    methods: tuple[str, ...],
) -> Onboarded:
    """A new merchant with one API key; ``methods`` are the channels it may use (the platform
    passes every channel of its registry unless told otherwise)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LEN:
        raise ValueError(f"merchant name must be 1..{MAX_NAME_LEN} characters")
    if not 0 <= fee_rate_ppm <= 100_000:
        raise ValueError("fee rate must be between 0 and 10%")
    merchant = Merchant(
        mchid=new_mchid(),
        name=name,
        status="ACTIVE",
        fee_rate_ppm=fee_rate_ppm,
        methods=methods,
        created_at=utcnow(),
    )
    key = new_api_key(merchant.mchid)
    with db.transaction() as conn:
        repository.add(conn, merchant, key, vault)
    return Onboarded(merchant, key)


@dataclass(frozen=True, slots=True)
class Rotation:
    key: ApiKey  # the new key: shown once
    old_key_ids: list[str]  # still valid until old_keys_expire_at
    old_keys_expire_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "mchid": self.key.mchid,
            "key_id": self.key.key_id,
            "secret": self.key.secret,
            "old_key_ids": self.old_key_ids,
            "old_keys_expire_at": self.old_keys_expire_at.isoformat(),
        }


def rotate_key(db: Database, vault: Vault, mchid: str, grace: timedelta) -> Rotation:
    """Issue a new API key; the merchant's other keys keep working for ``grace``, then are
    refused. Notifications are signed with the new key from now on."""
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise ValueError(f"grace must be between 0 and {MAX_ROTATION_GRACE.days} days")
    key = new_api_key(mchid)
    now = utcnow()
    with db.transaction() as conn:
        if repository.get_for_update(conn, mchid) is None:
            raise MerchantNotFound(mchid)
        repository.add_key(conn, key, vault, now)
        old = repository.expire_keys(conn, mchid, key.key_id, now + grace)
    return Rotation(key, old, now + grace)
