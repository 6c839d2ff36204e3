"""Ledger consumers: post the capture voucher once per successful payment and the refund
voucher once per successful refund, whatever the number of deliveries (inbox + unique voucher
per business record), a fetched batch of events in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from paygrid.bus.codec import decode
from paygrid.bus.inbox import first_deliveries
from paygrid.bus.ports import Event
from paygrid.kernel.clock import utcnow
from paygrid.ledger import repository
from paygrid.ledger.domain import (
    Direction,
    Voucher,
    capture_fees,
    capture_voucher,
    channel_cost,
    fee_income,
    pending_clearing,
    refund_fee_returned,
    refund_voucher,
)
from paygrid.ledger.repository import AccountCache, Posting
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
    """A batch handler (:data:`paygrid.bus.ports.BatchHandler`): a fetched batch of events is
    booked in ONE transaction, all or nothing, its vouchers posted together
    (:func:`repository.post_many`)."""

    def __init__(self, db: Database, rates: FeeRates, zone: str, cell: int = 0) -> None:
        self._db = db
        self._rates = rates
        self._zone = zone
        self._cell = cell
        self._accounts = repository.AccountCache()

    def __call__(self, events: Sequence[Event]) -> None:
        mine = [e for e in events if e.event_type in EVENT_TYPES]
        if not mine:
            return
        with self._db.transaction() as conn:
            # Sorted: concurrent consumers given overlapping batches lock inbox keys in one order.
            fresh = first_deliveries(conn, CONSUMER, sorted({e.event_id for e in mine}))
            batch = _Batch(conn, self._rates, self._zone, self._cell, self._accounts)
            for event in mine:
                if event.event_id not in fresh:
                    continue  # a redelivery, or the same event twice in the batch
                fresh.discard(event.event_id)
                if event.event_type == PaymentSucceeded.TYPE:
                    batch.capture(event, decode(event, PaymentSucceeded))
                else:
                    batch.refund(event, decode(event, RefundSucceeded).refund)
            batch.flush()
        self._accounts.learn(batch.new_accounts)
        batch.log_posted()


class _Batch:
    """The vouchers of one batch, posted together; a refund first flushes what is pending, so
    it reads its payment's capture and earlier refunds even when they are in this batch."""

    def __init__(
        self, conn: Connection, rates: FeeRates, zone: str, cell: int, accounts: AccountCache
    ) -> None:
        self._conn, self._rates, self._zone, self._cell = conn, rates, zone, cell
        self._accounts = accounts
        self._merchant_rates: dict[str, int] = {}  # read once per merchant per batch
        self._pending: list[Posting] = []
        self._events: dict[tuple[str, str], Event] = {}  # (kind, business_ref) -> its event
        self._posted: list[tuple[Voucher, str, Event]] = []
        self.new_accounts: set[str] = set()

    def capture(self, event: Event, succeeded: PaymentSucceeded) -> None:
        payment = succeeded.payment
        assert payment.channel is not None, f"{payment.payment_id} succeeded without a channel"
        if ("capture", payment.payment_id) in self._events:
            self._ignored("capture", payment.payment_id, event.event_id)
            return
        rate = self._merchant_rates.get(payment.mchid)
        if rate is None:
            rate = self._merchant_rates[payment.mchid] = self._rates.merchant_rate_ppm(
                self._conn, payment.mchid
            )
        amount, currency = payment.amount.total, payment.amount.currency
        fees = capture_fees(amount, rate, self._rates.channel_rate_ppm(payment.channel))
        voucher = capture_voucher(
            payment.payment_id, payment.mchid, payment.channel, amount, currency, fees
        )
        self._add(event, voucher, payment.paid_at)

    def refund(self, event: Event, refund: RefundView) -> None:
        """The refund voucher; the merchant fee returned pro rata, from the capture voucher and
        the payment's earlier refund vouchers, read in the transaction that posts it."""
        self.flush()
        if repository.voucher_exists(self._conn, "refund", refund.refund_id):
            self._ignored("refund", refund.refund_id, event.event_id)
            return
        self._add(event, _refund_voucher(self._conn, refund), refund.succeeded_at)

    def _add(self, event: Event, voucher: Voucher, business_at: datetime | None) -> None:
        self._events[(voucher.kind, voucher.business_ref)] = event
        self._pending.append(Posting(voucher, business_at or utcnow()))

    def flush(self) -> None:
        if not self._pending:
            return
        posted = repository.post_many(
            self._conn, self._pending, utcnow(), self._zone, self._cell, self._accounts
        )
        self.new_accounts.update(posted.new_accounts)
        for p in self._pending:
            key = (p.voucher.kind, p.voucher.business_ref)
            voucher_id = posted.voucher_ids.get(key)
            if voucher_id is None:
                self._ignored(key[0], key[1], self._events[key].event_id)
            else:
                self._posted.append((p.voucher, voucher_id, self._events[key]))
        self._pending = []

    def log_posted(self) -> None:
        """One line per voucher, with the request id of the event it came from, so a payment
        can be followed from the callback into the ledger's log."""
        for voucher, voucher_id, event in self._posted:
            log.info(
                "%s voucher %s posted for %s",
                voucher.kind,
                voucher_id,
                voucher.business_ref,
                extra={"request_id": event.request_id, "payment_id": event.aggregate_id},
            )

    @staticmethod
    def _ignored(kind: str, business_ref: str, event_id: str) -> None:
        log.warning("%s voucher for %s exists; event %s ignored", kind, business_ref, event_id)


def _refund_voucher(conn: Connection, refund: RefundView) -> Voucher:
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
    cost = channel_cost(refund.channel, currency)  # the channel's fee, given back the same way
    kept = repository.booked(conn, "capture", payment_id, cost, debit) or 0
    given = repository.booked_under(conn, "refund", payment_id, cost, credit)
    channel_fee = refund_fee_returned(kept, captured, refunded, given, refund.amount)
    return refund_voucher(
        refund.refund_id,
        payment_id,
        refund.mchid,
        refund.channel,
        refund.amount,
        currency,
        fee,
        channel_fee,
    )
