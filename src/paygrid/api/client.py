"""A small merchant-side client of API v1: signs each request as DESIGN.md specifies.
Used by the CLI, the tests and the benchmarks; a merchant may copy it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx

from paygrid.api.auth import TIMESTAMP_WINDOW_S, authorization_header

DEFAULT_TIMEOUT_S = 10.0
NOTIFY_TIMESTAMP_WINDOW_S = TIMESTAMP_WINDOW_S  # ±300 s, as the API asks of merchants
MAX_TIMESTAMP_DIGITS = 12


class MerchantClient:
    def __init__(
        self, base_url: str, mchid: str, key_id: str, secret: str, http: httpx.Client | None = None
    ) -> None:
        """``base_url`` is the API root without /v1, e.g. http://127.0.0.1:8000."""
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.mchid = mchid
        self.key_id = key_id
        self.secret = secret
        self.http = http or httpx.Client(timeout=DEFAULT_TIMEOUT_S)

    def request(
        self,
        method: str,
        path_and_query: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw_body: bytes | None = None,
        nonce: str | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        content = (
            raw_body
            if raw_body is not None
            else (b"" if body is None else json.dumps(body, ensure_ascii=False).encode())
        )
        auth = authorization_header(
            self.mchid,
            self.key_id,
            self.secret,
            method,
            path_and_query,
            content,
            nonce or secrets.token_hex(16),
            timestamp,
        )
        all_headers = {"Authorization": auth, "Content-Type": "application/json", **(headers or {})}
        return self.http.request(
            method, self.base_url + path_and_query, content=content, headers=all_headers
        )

    def create_payment(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/v1/payments", body, headers)

    def get_payment(self, payment_id: str) -> httpx.Response:
        return self.request("GET", f"/v1/payments/{payment_id}")

    def close_payment(self, payment_id: str) -> httpx.Response:
        return self.request("POST", f"/v1/payments/{payment_id}/close", {})

    def create_refund(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> httpx.Response:
        """``POST /v1/refunds`` (退款): 201 a new refund, 200 the one this out_refund_no names."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/v1/refunds", body, headers)

    def get_refund(self, refund_id: str) -> httpx.Response:
        return self.request("GET", f"/v1/refunds/{refund_id}")

    def find_refund(self, out_refund_no: str) -> httpx.Response:
        return self.request("GET", f"/v1/refunds?out_refund_no={quote(out_refund_no)}")

    def notifications(self, payment_id: str) -> httpx.Response:
        return self.request("GET", f"/v1/notifications?payment_id={payment_id}")

    def resend(self, notify_id: str) -> httpx.Response:
        return self.request("POST", f"/v1/notifications/{notify_id}/resend", {})


def verify_notification(
    secret: str, headers: dict[str, str], body: bytes, now: float | None = None
) -> bool:
    """Merchant side: check Paygrid-Signature over TIMESTAMP\\nNONCE\\nBODY\\n, and that
    Paygrid-Timestamp is within ±300 s of ``now`` (a captured notification replayed later,
    or one stamped in the future, is refused). Deduplicate accepted ones by Paygrid-Notify-Id."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("paygrid-timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        return False
    current = int(time.time() if now is None else now)
    if abs(current - int(timestamp)) > NOTIFY_TIMESTAMP_WINDOW_S:
        return False
    message = (
        timestamp.encode() + b"\n" + lower.get("paygrid-nonce", "").encode() + b"\n" + body + b"\n"
    )
    expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    signature = lower.get("paygrid-signature", "")
    return signature.isascii() and hmac.compare_digest(expected.decode(), signature)
