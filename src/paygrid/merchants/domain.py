"""Merchant domain: who may take payments and with which keys. No framework imports."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_FEE_RATE_PPM = 6_000  # 0.60% merchant rate (DESIGN.md fee example)
SECRET_BYTES = 32
DEFAULT_ROTATION_GRACE = timedelta(hours=24)  # the old key keeps working this long
MAX_ROTATION_GRACE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Merchant:
    mchid: str
    name: str
    status: str  # ACTIVE | SUSPENDED
    fee_rate_ppm: int
    methods: tuple[str, ...]
    created_at: datetime

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    mchid: str
    secret: str
    status: str
    expires_at: datetime | None = None  # set when a newer key replaced this one

    def valid_at(self, now: datetime) -> bool:
        return self.status == "ACTIVE" and (self.expires_at is None or now < self.expires_at)


def new_mchid() -> str:
    """Merchant number: 'm' + 10 digits, easy to read out on the phone."""
    return "m" + "".join(secrets.choice("0123456789") for _ in range(10))


def new_api_key(mchid: str) -> ApiKey:
    return ApiKey(
        key_id="key_" + secrets.token_hex(8),
        mchid=mchid,
        secret=secrets.token_urlsafe(SECRET_BYTES),
        status="ACTIVE",
    )
