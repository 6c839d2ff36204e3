"""Unit of work of the payment core: one transaction in which a use case loads a payment,
lets the domain decide, stores the change and records its events in the outbox (so the change
and its events commit together). Optimistic: a concurrent change retries from the top."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection

from paygrid.bus.outbox import record_event
from paygrid.payments import repository
from paygrid.payments.domain import Payment, check_transition
from paygrid.payments.errors import PaymentRejected, not_found
from paygrid.payments.events import PaymentEvent, PaymentView, RefundEvent
from paygrid.payments.repository import ConcurrentUpdate
from paygrid.payments.views import refund_view
from paygrid.storage.database import Database

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_OPTIMISTIC_RETRIES = 5
View = Callable[[Payment], PaymentView]


@dataclass(frozen=True, slots=True)
class Tx:
    """One open transaction of the unit of work."""

    conn: Connection
    view: View

    def add(self, payment: Payment, events: Iterable[type[PaymentEvent]]) -> None:
        repository.add(self.conn, payment)
        self._emit(payment, events)

    def save(
        self,
        before: Payment,
        after: Payment,
        cause: str,
        events: Iterable[type[PaymentEvent]] = (),
    ) -> Payment:
        """Store ``after`` if nobody changed ``before`` meanwhile (else ConcurrentUpdate)."""
        if before.status != after.status:
            check_transition(before.payment_id, before.status, after.status)
        repository.save_change(self.conn, before, after, cause)
        self._emit(after, events)
        return after

    def _emit(self, payment: Payment, events: Iterable[type[PaymentEvent]]) -> None:
        for event in events:
            record_event(self.conn, event(payment=self.view(payment)))

    def emit_refund(
        self, payment: Payment, refund_id: str, events: Iterable[type[RefundEvent]]
    ) -> None:
        """Record events of one of ``payment``'s refunds (as saved) in the outbox."""
        refund = payment.refund(refund_id)
        assert refund is not None, refund_id
        for event in events:
            record_event(self.conn, event(refund=refund_view(refund, payment)))


class UnitOfWork:
    def __init__(self, db: Database, view: View) -> None:
        self._db = db
        self._view = view

    @contextmanager
    def begin(self) -> Iterator[Tx]:
        with self._db.transaction() as conn:
            yield Tx(conn, self._view)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction: never takes the write lock."""
        with self._db.read() as conn:
            yield conn

    def change(self, payment_id: str, change: Callable[[Tx, Payment], T]) -> T:
        """Run ``change`` on the current payment in a transaction; retried from a fresh read
        when another writer changed the payment between our read and our write."""
        for attempt in range(MAX_OPTIMISTIC_RETRIES):
            try:
                with self.begin() as tx:
                    current = repository.get(tx.conn, payment_id, for_update=True)
                    if current is None:
                        raise not_found(payment_id)
                    return change(tx, current)
            except ConcurrentUpdate:
                log.info("concurrent update of %s, retry %d", payment_id, attempt + 1)
        raise PaymentRejected("CONCURRENT_UPDATE", f"payment {payment_id} is busy; retry")
