"""Payment use cases: create, place the channel order, close, apply the channel's truth
(callback or 补单 query), expire. Each state change commits with its events (outbox)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from paygrid.bus.outbox import record_event
from paygrid.channels.ports import (
    CallbackRefusal,
    CallbackRejected,
    CallbackReply,
    ChannelAdapter,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    Trade,
)
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.kernel.money import Money
from paygrid.payments import repository
from paygrid.payments.domain import (
    ANOMALIES,
    EVENT_OF,
    ChannelDecision,
    ChannelOutcome,
    Discount,
    Item,
    Payment,
    PaymentStatus,
    check_transition,
)
from paygrid.payments.errors import PaymentRejected, not_found
from paygrid.payments.repository import ConcurrentUpdate
from paygrid.payments.views import payment_resource
from paygrid.storage.database import Database

log = logging.getLogger(__name__)
S = PaymentStatus
T = TypeVar("T")

MAX_OPTIMISTIC_RETRIES = 5
EXPIRY_BATCH = 100
RECOVERY_BATCH = 100
CHANNEL_METHODS = frozenset({"native", "h5", "jsapi", "app"})


@dataclass(frozen=True, slots=True)
class CreatePayment:
    mchid: str
    out_trade_no: str
    total: int
    currency: str
    description: str
    notify_url: str
    return_url: str | None
    channel: str | None
    method: str
    expire_at: datetime
    attach: str | None
    items: tuple[Item, ...]
    discounts: tuple[Discount, ...]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Urls:
    cashier_base_url: str  # where the cashier app is served
    callback_base_url: str  # where channels send callbacks (回调)


class PaymentService:
    def __init__(
        self, db: Database, channels: Mapping[str, ChannelAdapter], urls: Urls, cell: int = 0
    ) -> None:
        self._db = db
        self._channels = channels
        self.urls = urls
        self._cell = cell

    # --- reads ----------------------------------------------------------------------------
    def get(self, payment_id: str, mchid: str | None = None) -> Payment:
        with self._db.read() as conn:
            payment = repository.get(conn, payment_id)
        if payment is None or (mchid is not None and payment.mchid != mchid):
            raise not_found(payment_id)
        return payment

    def get_by_out_trade_no(self, mchid: str, out_trade_no: str) -> Payment:
        with self._db.read() as conn:
            payment = repository.get_by_out_trade_no(conn, mchid, out_trade_no)
        if payment is None:
            raise PaymentRejected(
                "PAYMENT_NOT_FOUND", f"no payment with out_trade_no {out_trade_no!r}"
            )
        return payment

    def resource(self, payment: Payment) -> dict[str, object]:
        return payment_resource(payment, self.urls.cashier_base_url)

    @property
    def channel_names(self) -> frozenset[str]:
        return frozenset(self._channels)

    def currencies(self, channels: Iterable[str]) -> frozenset[str]:
        """The currencies any of ``channels`` takes (channels not configured here take none)."""
        found: frozenset[str] = frozenset()
        for name in channels:
            adapter = self._channels.get(name)
            if adapter is not None:
                found |= adapter.currencies
        return found

    # --- create ---------------------------------------------------------------------------
    def create(self, cmd: CreatePayment) -> tuple[Payment, bool]:
        """Create once per (merchant, out_trade_no); a repeat with the same body returns the
        existing payment (created=False), a different body is DUPLICATE_OUT_TRADE_NO."""
        if cmd.channel is not None:
            _check_currency(self._adapter(cmd.channel), cmd.currency)
        existing = self._existing(cmd)
        if existing is not None:
            return self._continue(existing, cmd), False
        now = utcnow()
        payment = Payment(
            payment_id=new_id("pay", self._cell),
            mchid=cmd.mchid,
            out_trade_no=cmd.out_trade_no,
            amount=cmd.total,
            currency=cmd.currency,
            description=cmd.description,
            notify_url=cmd.notify_url,
            return_url=cmd.return_url,
            channel=None,
            method=cmd.method,
            status=S.CREATED,
            expire_at=cmd.expire_at,
            attach=cmd.attach,
            items=cmd.items,
            discounts=cmd.discounts,
            request_hash=cmd.fingerprint,
            code_url=None,
            channel_trade_no=None,
            refunded_amount=0,
            paid_at=None,
            closed_at=None,
            cashier_token=secrets.token_urlsafe(18),
            created_at=now,
            updated_at=now,
            version=1,
        )
        try:
            with self._db.transaction() as conn:
                repository.add(conn, payment)
                record_event(
                    conn, "payment.created", payment.payment_id, {"payment": self.resource(payment)}
                )
        except IntegrityError:
            existing = self._existing(cmd)  # lost a race with the same out_trade_no
            if existing is None:
                raise
            return self._continue(existing, cmd), False
        return self._continue(payment, cmd), True

    def _continue(self, payment: Payment, cmd: CreatePayment) -> Payment:
        """Place the channel order the request asked for; a repeat after a channel failure
        picks up where the first attempt stopped."""
        wants_order = cmd.channel is not None and cmd.method in CHANNEL_METHODS
        if not wants_order or payment.status != S.CREATED:
            return payment
        assert cmd.channel is not None
        return self.start_channel_payment(payment.payment_id, cmd.channel, cmd.method)

    def _existing(self, cmd: CreatePayment) -> Payment | None:
        with self._db.read() as conn:
            existing = repository.get_by_out_trade_no(conn, cmd.mchid, cmd.out_trade_no)
        if existing is not None and existing.request_hash != cmd.fingerprint:
            raise PaymentRejected(
                "DUPLICATE_OUT_TRADE_NO",
                f"out_trade_no {cmd.out_trade_no!r} was used for another "
                f"payment ({existing.payment_id}) with a different body",
            )
        return existing

    # --- channel order --------------------------------------------------------------------
    def start_channel_payment(self, payment_id: str, channel: str, method: str) -> Payment:
        """Place (or reuse) the channel order so the payer can pay; CREATED -> PAYING."""
        adapter = self._adapter(channel)
        payment = self.get(payment_id)
        if payment.status == S.PAYING and payment.channel == channel and payment.code_url:
            return payment
        self._ensure_payable(payment)
        _check_currency(adapter, payment.currency)
        if payment.channel is not None and payment.channel != channel:
            self._close_at_channel(payment)  # one live channel order at a time
        if payment.channel != channel:
            self._record_channel_intent(payment_id, channel, method)
        request = OrderRequest(
            payment_ref=payment.payment_id,
            amount=Money(payment.amount, payment.currency),
            description=payment.description,
            method=method,
            expire_at=payment.expire_at,
            notify_url=f"{self.urls.callback_base_url.rstrip('/')}/callbacks/{channel}",
            attach=None,
        )
        try:
            created = adapter.create_order(request)
        except ChannelError as exc:
            log.warning("channel %s refused order for %s: %s", channel, payment_id, exc)
            raise PaymentRejected(
                "CHANNEL_UNAVAILABLE" if exc.retryable else "CHANNEL_ERROR",
                f"{channel}: {exc.message}",
            ) from exc

        def change(conn: Connection, current: Payment) -> Payment:
            if current.status not in (S.CREATED, S.PAYING):
                return current  # a callback or close won the race; its state stands
            after = replace(
                current,
                status=S.PAYING,
                channel=channel,
                method=method,
                code_url=created.code_url,
                updated_at=utcnow(),
            )
            if current.status == S.CREATED:
                check_transition(current.payment_id, current.status, after.status)
            repository.save_change(conn, current, after, f"order_placed:{channel}")
            return after

        after = self._mutate(payment_id, change)
        if after.channel != channel or after.status not in (S.PAYING, S.SUCCESS):
            # Closed or failed while we were at the channel: leave no payable order behind.
            self._close_at_channel(replace(after, channel=channel))
        return after

    def _record_channel_intent(self, payment_id: str, channel: str, method: str) -> None:
        """Write down the channel before calling it: if we crash after the channel took the
        order, expiry and 补单 still know where to close or query it."""

        def change(conn: Connection, current: Payment) -> Payment:
            if current.status != S.CREATED:
                return current
            after = replace(current, channel=channel, method=method, updated_at=utcnow())
            repository.save_change(conn, current, after, f"order_requested:{channel}")
            return after

        self._mutate(payment_id, change)

    def _ensure_payable(self, payment: Payment) -> None:
        if payment.status == S.SUCCESS:
            raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payment is already paid")
        if payment.status in (S.CLOSED, S.FAILED):
            raise PaymentRejected(
                f"PAYMENT_{payment.status.value}", f"the payment is {payment.status.value.lower()}"
            )
        if payment.is_expired(utcnow()):
            raise PaymentRejected("PAYMENT_EXPIRED", "the payment has expired")

    # --- close ----------------------------------------------------------------------------
    def close(self, payment_id: str, mchid: str | None, cause: str = "merchant_close") -> Payment:
        payment = self.get(payment_id, mchid)
        if payment.status == S.CLOSED:
            return payment
        if payment.status == S.SUCCESS:
            raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payment is paid; refund it instead")
        if payment.status == S.FAILED:
            raise PaymentRejected("PAYMENT_FAILED", "the payment failed and is final")
        if payment.channel is not None:
            self._close_at_channel(payment)

        def change(conn: Connection, current: Payment) -> Payment:
            if current.status in (S.CLOSED, S.SUCCESS, S.FAILED):
                return current
            return self._transition(conn, current, S.CLOSED, cause, closed_at=utcnow())

        closed = self._mutate(payment_id, change)
        if closed.status == S.SUCCESS:
            raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payment was paid meanwhile")
        return closed

    def _close_at_channel(self, payment: Payment) -> None:
        assert payment.channel is not None
        adapter = self._adapter(payment.channel)
        try:
            outcome = adapter.close(payment.payment_id)
        except ChannelError as exc:
            raise PaymentRejected(
                "CHANNEL_UNAVAILABLE" if exc.retryable else "CHANNEL_ERROR",
                f"close at {payment.channel} failed: {exc.message}",
            ) from exc
        if outcome == CloseOutcome.ALREADY_PAID:
            # The payer paid just now: take the channel's word for it, then refuse the close.
            trade = adapter.query(payment.payment_id)
            self.apply_trade(payment.channel, payment.payment_id, trade, "close_race")
            raise PaymentRejected("PAYMENT_ALREADY_PAID", "the payer paid before the close")

    # --- the channel's truth --------------------------------------------------------------
    def handle_callback(
        self, channel: str, headers: Mapping[str, str], body: bytes
    ) -> CallbackReply:
        """A channel callback (回调): verify, deduplicate by (notify id, payment), apply; answer
        as the channel expects. A repeat, late or out-of-order callback changes nothing."""
        adapter = self._adapter(channel)
        try:
            callback = adapter.parse_callback(headers, body)
        except CallbackRejected as exc:
            # A verified callback we cannot read is a fault on one side: an error, not noise.
            forged = exc.refusal == CallbackRefusal.BAD_SIGNATURE
            level = logging.WARNING if forged else logging.ERROR
            log.log(level, "refused %s callback (%s): %s", channel, exc.refusal.value, exc)
            return adapter.callback_nack(str(exc), exc.refusal)
        trade = callback.trade
        ref = trade.payment_ref
        if ref is None:
            log.error("%s callback %s names no payment", channel, callback.notify_id)
            return adapter.callback_nack("no out_trade_no", CallbackRefusal.MALFORMED)
        try:
            outcome = self._mutate_outcome(
                ref,
                lambda conn, current: self._apply(
                    conn, current, trade, f"callback:{channel}", callback.notify_id, channel
                ),
            )
        except PaymentRejected as exc:
            unknown = exc.code == "PAYMENT_NOT_FOUND"
            log.error("%s callback %s for %s: %s", channel, callback.notify_id, ref, exc)
            refusal = CallbackRefusal.UNKNOWN_PAYMENT if unknown else CallbackRefusal.RETRY_LATER
            return adapter.callback_nack(exc.message, refusal)
        log.info("%s callback %s for %s: %s", channel, callback.notify_id, ref, outcome)
        return adapter.callback_ack()

    def apply_trade(self, channel: str, payment_id: str, trade: Trade, cause: str) -> str:
        """Apply a 补单 (query) answer about ``payment_id``; refusals are recorded once per
        payment, cause and outcome, so `paygrid check` reports them like callbacks."""
        return self._mutate_outcome(
            payment_id,
            lambda conn, current: self._apply(conn, current, trade, cause, None, channel),
        )

    def _apply(
        self,
        conn: Connection,
        current: Payment,
        trade: Trade,
        cause: str,
        notify_id: str | None,
        channel: str,
    ) -> tuple[Payment, str]:
        account = self._adapter(channel).account
        decision = current.apply_channel_trade(trade, account, channel, utcnow())
        outcome = decision.outcome
        payment_id = current.payment_id
        record = repository.record_callback
        if notify_id is not None:
            if not record(conn, channel, notify_id, payment_id, trade, decision):
                return current, ChannelOutcome.DUPLICATE_CALLBACK
        elif outcome in ANOMALIES:  # a 补单 answer: one row per payment, cause and outcome
            record(conn, channel, f"{cause}:{outcome}", payment_id, trade, decision)
        if outcome in ANOMALIES:
            log.error(
                "payment %s: %s %s (%s) refused: %s: %s",
                current.payment_id,
                channel,
                cause,
                trade.raw_state,
                outcome,
                decision.problem,
            )
        if decision.changed:
            self._store(conn, current, decision, cause)
        return decision.payment, outcome

    def _store(
        self, conn: Connection, current: Payment, decision: ChannelDecision, cause: str
    ) -> None:
        after = decision.payment
        check_transition(current.payment_id, current.status, after.status)
        repository.save_change(conn, current, after, cause)
        for event in decision.events:
            record_event(conn, event, after.payment_id, {"payment": self.resource(after)})

    def _transition(
        self,
        conn: Connection,
        current: Payment,
        target: PaymentStatus,
        cause: str,
        **changes: object,
    ) -> Payment:
        check_transition(current.payment_id, current.status, target)
        after = replace(current, status=target, updated_at=utcnow(), **changes)  # type: ignore[arg-type]
        repository.save_change(conn, current, after, cause)
        record_event(conn, EVENT_OF[target], after.payment_id, {"payment": self.resource(after)})
        return after

    # --- schedules ------------------------------------------------------------------------
    def expire_due(self, now: datetime | None = None) -> int:
        """Close unpaid payments whose expire_at has passed, at the channel too."""
        with self._db.transaction() as conn:
            due = repository.due_for_expiry(conn, now or utcnow(), EXPIRY_BATCH)
        closed = 0
        for payment_id in due:
            try:
                self.close(payment_id, None, cause="expired")
                closed += 1
            except PaymentRejected as exc:
                log.info("expiry of %s: %s", payment_id, exc)
        return closed

    def recover_pending(self, older_than: timedelta, now: datetime | None = None) -> int:
        """补单: ask the channel about PAYING payments whose callback has not come."""
        cutoff = (now or utcnow()) - older_than
        with self._db.transaction() as conn:
            candidates = repository.paying_since(conn, cutoff, RECOVERY_BATCH)
        changed = 0
        for payment_id in candidates:
            payment = self.get(payment_id)
            if payment.channel is None:
                continue
            try:
                trade = self._adapter(payment.channel).query(payment_id)
            except ChannelError as exc:
                log.warning("补单 query for %s failed: %s", payment_id, exc)
                continue
            outcome = self.apply_trade(payment.channel, payment_id, trade, "recovery_query")
            if outcome.startswith("APPLY"):
                changed += 1
            else:
                self._touch(payment_id)  # queried now: next query after another interval
        return changed

    def _touch(self, payment_id: str) -> None:
        def change(conn: Connection, current: Payment) -> Payment:
            if current.status not in (S.CREATED, S.PAYING):
                return current
            after = replace(current, updated_at=utcnow())
            repository.save_change(conn, current, after, "recovery_query")
            return after

        self._mutate(payment_id, change)

    # --- plumbing -------------------------------------------------------------------------
    def _adapter(self, channel: str) -> ChannelAdapter:
        adapter = self._channels.get(channel)
        if adapter is None:
            raise PaymentRejected("CHANNEL_NOT_SUPPORTED", f"unknown channel {channel!r}")
        return adapter

    def _mutate(self, payment_id: str, change: Callable[[Connection, Payment], Payment]) -> Payment:
        return self._retrying(payment_id, change)

    def _retrying(self, payment_id: str, change: Callable[[Connection, Payment], T]) -> T:
        for attempt in range(MAX_OPTIMISTIC_RETRIES):
            try:
                with self._db.transaction() as conn:
                    current = repository.get(conn, payment_id, for_update=True)
                    if current is None:
                        raise not_found(payment_id)
                    return change(conn, current)
            except ConcurrentUpdate:
                log.info("concurrent update of %s, retry %d", payment_id, attempt + 1)
        raise PaymentRejected("CONCURRENT_UPDATE", f"payment {payment_id} is busy; retry")

    def _mutate_outcome(
        self, payment_id: str, change: Callable[[Connection, Payment], tuple[Payment, str]]
    ) -> str:
        return self._retrying(payment_id, change)[1]


def _check_currency(adapter: ChannelAdapter, currency: str) -> None:
    if currency not in adapter.currencies:
        raise PaymentRejected(
            "UNSUPPORTED_CURRENCY",
            f"{adapter.name} takes {', '.join(sorted(adapter.currencies))}, not {currency}",
        )
