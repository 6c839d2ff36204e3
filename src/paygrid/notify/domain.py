"""Notification rules: the retry schedule (DESIGN.md) and the signature. No framework imports."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

# Delay before each retry after the first attempt; after the last, the notification FAILED.
RETRY_SCHEDULE_S: tuple[int, ...] = (
    15,
    15,
    30,
    180,
    600,
    1200,
    1800,
    1800,
    1800,
    3600,
    10800,
    10800,
    10800,
    21600,
    21600,
)
MAX_ATTEMPTS = 1 + len(RETRY_SCHEDULE_S)
DELIVERY_TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 4096


def next_attempt_at(attempts_made: int, now: datetime, scale: float = 1.0) -> datetime | None:
    """When to try again after ``attempts_made`` failed attempts; None when we give up."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    delay = RETRY_SCHEDULE_S[attempts_made - 1] * scale
    return now + timedelta(seconds=delay)


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Paygrid-Signature = base64(HMAC-SHA256(secret, TIMESTAMP\\nNONCE\\nBODY\\n))."""
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
