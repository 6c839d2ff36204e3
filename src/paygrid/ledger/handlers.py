"""Ledger consumers: post the capture voucher once per successful payment and the refund
voucher once per successful refund, whatever the number of deliveries (inbox + unique voucher
per business record)."""

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
from paygrid.ledger.domain import (
    Direction,
    Voucher,
    capture_fees,
    capture_voucher,
    fee_income,
    pending_clearing,
    refund_fee_returned,
    refund_voucher,
)
from paygrid.payments.events import PaymentSucceeded, RefundSucceeded, RefundView
from paygrid.storage.database import Database

log = logging.getLogger(__name__)
CONSUMER = "ledger"
EVENT_TYPES = frozenset({PaymentSucceeded.TYPE, RefundSucceeded.TYPE})


class CaptureNotBooked(Exception):
    """A refund arrived before its payment's capture voucher: refused, so the bus delivers it
    again (the capture comes first on the payment's ordered stream, unless redelivered)."""


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
        elif event.event_type == RefundSucceeded.TYPE:
            self._on_refund_succeeded(event.event_id, decode(event, RefundSucceeded).refund)

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

    def _on_refund_succeeded(self, event_id: str, refund: RefundView) -> None:
        """The refund voucher; the merchant fee returned pro rata, from the capture voucher and
        the payment's earlier refund vouchers, read in the transaction that posts it."""
        with self._db.transaction() as conn:
            if not first_delivery(conn, CONSUMER, event_id):
                return
            if repository.voucher_exists(conn, "refund", refund.refund_id):
                log.warning("refund voucher for %s exists; %s ignored", refund.refund_id, event_id)
                return
            voucher = self._refund_voucher(conn, refund)
            at = utcnow()
            voucher_id = repository.post(
                conn, voucher, at, refund.succeeded_at or at, self._zone, self._cell
            )
        log.info("refund voucher %s posted for %s", voucher_id, refund.refund_id)

    def _refund_voucher(self, conn: Connection, refund: RefundView) -> Voucher:
        payment_id, currency = refund.payment_id, refund.currency
        clearing = pending_clearing(refund.channel, currency)
        captured = repository.booked(conn, "capture", payment_id, clearing, Direction.DEBIT)
        if captured is None:
            raise CaptureNotBooked(f"{refund.refund_id}: {payment_id} has no capture voucher yet")
        assert captured == refund.payment_total, (payment_id, captured, refund.payment_total)
        fees, credit, debit = fee_income(currency), Direction.CREDIT, Direction.DEBIT
        charged = repository.booked(conn, "capture", payment_id, fees, credit) or 0
        refunded = repository.booked_under(conn, "refund", payment_id, clearing, credit)
        returned = repository.booked_under(conn, "refund", payment_id, fees, debit)
        fee = refund_fee_returned(charged, captured, refunded, returned, refund.amount)
        return refund_voucher(
            refund.refund_id, payment_id, refund.mchid, refund.channel, refund.amount, currency, fee
        )
