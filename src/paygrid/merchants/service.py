"""Merchant use cases: onboarding (进件) with a first API key."""

from __future__ import annotations

from dataclasses import dataclass

from paygrid.kernel.clock import utcnow
from paygrid.merchants import repository
from paygrid.merchants.domain import (
    DEFAULT_FEE_RATE_PPM,
    DEFAULT_METHODS,
    ApiKey,
    Merchant,
    new_api_key,
    new_mchid,
)
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


def create_merchant(
    db: Database,
    name: str,
    fee_rate_ppm: int = DEFAULT_FEE_RATE_PPM,
    methods: tuple[str, ...] = DEFAULT_METHODS,
) -> Onboarded:
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
        repository.add(conn, merchant, key)
    return Onboarded(merchant, key)
