"""Merchant domain: who may take payments and with which keys. No framework imports."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

DEFAULT_FEE_RATE_PPM = 6_000  # 0.60% merchant rate (DESIGN.md fee example)
DEFAULT_METHODS = ("wechatpay",)
SECRET_BYTES = 32


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
