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
# One attempt, all of it (DNS, connect, TLS, request, status line and headers), must end
# within this deadline or it counts as a failed attempt ("timeout"). The response body is
# never read: only the status matters.
DELIVERY_DEADLINE_S = 5.0
# Attempts in flight at once in one notifier, and of one merchant: a merchant whose endpoint
# is slow or dead can hold at most MAX_IN_FLIGHT_PER_MERCHANT slots and delay only itself.
# A merchant's own rate is bounded by its slots over its endpoint's answer time (16 slots at
# 100 ms: 160 notifications/s); at 4 a busy merchant's notifications fell seconds behind its
# payments (bench/e2e_payments.py, production profile).
MAX_IN_FLIGHT = 256
MAX_IN_FLIGHT_PER_MERCHANT = 16


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


# Why an attempt failed, as the merchant sees it (GET /v1/notifications, the CLI): coarse on
# purpose, so that paygrid cannot be used to map a network ("connection refused" on one port,
# "timed out" on another). The details go to paygrid's own log only.
REASON_TIMEOUT = "timeout"
REASON_CONNECTION_FAILED = "connection_failed"
REASON_ADDRESS_NOT_ALLOWED = "address_not_allowed"
REASON_INVALID_URL = "invalid_url"
REASONS = frozenset(
    {REASON_TIMEOUT, REASON_CONNECTION_FAILED, REASON_ADDRESS_NOT_ALLOWED, REASON_INVALID_URL}
)


def status_reason(status: int) -> str | None:
    """None for a 2xx (acknowledged); ``http_status_4xx`` and the like otherwise."""
    return None if 200 <= status < 300 else f"http_status_{status // 100}xx"
