"""Why a payment use case refused: a machine code and a human message. HTTP mapping is the
API's business (api/errors.py), not ours."""

from __future__ import annotations


class PaymentRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def not_found(payment_id: str) -> PaymentRejected:
    return PaymentRejected("PAYMENT_NOT_FOUND", f"no payment {payment_id}")
