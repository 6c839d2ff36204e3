"""API errors: an HTTP status, a machine code, a human message (DESIGN.md error body)."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


# Status for each refusal code of the payment core; anything unlisted is a 400.
PAYMENT_CODE_STATUS: Mapping[str, int] = {
    "PAYMENT_NOT_FOUND": 404,
    "DUPLICATE_OUT_TRADE_NO": 409,
    "PAYMENT_ALREADY_PAID": 409,
    "PAYMENT_CLOSED": 409,
    "PAYMENT_FAILED": 409,
    "PAYMENT_EXPIRED": 409,
    "CONCURRENT_UPDATE": 409,
    "CHANNEL_UNAVAILABLE": 503,
    "CHANNEL_ERROR": 502,
    "CHANNEL_NOT_SUPPORTED": 400,
    "NO_ROUTE": 400,  # no routing rule covers the payment (the merchant may name a channel)
    "NO_CHANNEL_AVAILABLE": 503,  # every eligible channel is out now (breaker): retry later
    # agreements (协议)
    "AGREEMENT_NOT_FOUND": 404,
    "DUPLICATE_OUT_AGREEMENT_NO": 409,
    "AGREEMENT_NOT_PENDING": 409,
    # refunds (退款)
    "REFUND_NOT_FOUND": 404,
    "DUPLICATE_OUT_REFUND_NO": 409,
    "PAYMENT_NOT_REFUNDABLE": 409,
    "REFUND_EXCEEDS_REMAINING": 409,
    "REFUND_WINDOW_CLOSED": 409,
    "PARTIAL_REFUND_NOT_SUPPORTED": 409,
    "TOO_MANY_REFUNDS": 409,
}
