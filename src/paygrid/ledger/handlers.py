"""Ledger consumers: post the capture voucher once per successful payment, whatever the number
of deliveries (inbox + unique voucher per business record)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from paygrid.bus.codec import decode
from paygrid.bus.inbox import first_delivery
from paygrid.bus.ports import Event
from paygrid.kernel.clock import utcnow
from paygrid.ledger import repository
from paygrid.ledger.domain import capture_fees, capture_voucher
from paygrid.payments.events import PaymentSucceeded
from paygrid.storage.database import Database

log = logging.getLogger(__name__)
CONSUMER = "ledger"
EVENT_TYPES = frozenset({PaymentSucceeded.TYPE})


@dataclass(frozen=True, slots=True)
class FeeRates:
    """Ports to the fee plans: the merchant's rate and the channel's rate, in ppm."""

    merchant_rate_ppm: Callable[[Connection, str], int]
    channel_rate_ppm: Callable[[str], int]


class LedgerConsumer:
    def __init__(self, db: Database, rates: FeeRates, zone: str, cell: int = 0) -> None:
        self._db = db
        self._rates = rates
        self._zone = zone
        self._cell = cell

    def __call__(self, event: Event) -> None:
        if event.event_type == PaymentSucceeded.TYPE:
            self._on_payment_succeeded(event.event_id, decode(event, PaymentSucceeded))

    def _on_payment_succeeded(self, event_id: str, event: PaymentSucceeded) -> None:
        payment = event.payment
        payment_id = payment.payment_id
        assert payment.channel is not None, f"{payment_id} succeeded without a channel"
        with self._db.transaction() as conn:
            if not first_delivery(conn, CONSUMER, event_id):
                return
            if repository.voucher_exists(conn, "capture", payment_id):
                log.warning("capture voucher for %s exists; event %s ignored", payment_id, event_id)
                return
            amount, currency = payment.amount.total, payment.amount.currency
            fees = capture_fees(
                amount,
                self._rates.merchant_rate_ppm(conn, payment.mchid),
                self._rates.channel_rate_ppm(payment.channel),
            )
            voucher = capture_voucher(
                payment_id, payment.mchid, payment.channel, amount, currency, fees
            )
            now = utcnow()
            paid_at = payment.paid_at or now
            voucher_id = repository.post(conn, voucher, now, paid_at, self._zone, self._cell)
        log.info("capture voucher %s posted for %s", voucher_id, payment_id)
