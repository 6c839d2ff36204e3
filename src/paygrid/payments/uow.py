"""Unit of work of the payment core: one transaction in which a use case loads a payment,
lets the domain decide, stores the change and records its events in the outbox (so the change
and its events commit together). Optimistic: a concurrent change retries from the top."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
Loader = Callable[[Connection], Payment | None]


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
        saved = replace(after, version=before.version + 1)  # as stored: the next save's base
        self._emit(saved, events)
        return saved

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
        load: Loader = lambda conn: repository.get(conn, payment_id, for_update=True)  # noqa: E731
        return self._change(payment_id, load, change)

    def change_by_order(
        self, channel: str, channel_ref: str, change: Callable[[Tx, Payment], T]
    ) -> T:
        """:meth:`change` on the payment one of whose orders at ``channel`` is ``channel_ref``
        (what a callback names), found in the same transaction."""

        def load(conn: Connection) -> Payment | None:
            return repository.get_by_order(conn, channel, channel_ref, for_update=True)

        return self._change(channel_ref, load, change)

    def change_from(self, before: Payment, change: Callable[[Tx, Payment], T]) -> T:
        """:meth:`change` starting from ``before``, the payment as this process last stored
        it, without reading it again; from a fresh read if somebody changed it since."""
        try:
            with self.begin() as tx:
                return change(tx, before)
        except ConcurrentUpdate:
            log.info("%s changed since we stored it: read it again", before.payment_id)
        return self.change(before.payment_id, change)

    def _change(self, name: str, load: Loader, change: Callable[[Tx, Payment], T]) -> T:
        for attempt in range(MAX_OPTIMISTIC_RETRIES):
            try:
                with self.begin() as tx:
                    current = load(tx.conn)
                    if current is None:
                        raise not_found(name)
                    return change(tx, current)
            except ConcurrentUpdate:
                log.info("concurrent update of %s, retry %d", name, attempt + 1)
        raise PaymentRejected("CONCURRENT_UPDATE", f"payment {name} is busy; retry")
