"""Refund use cases (退款): request a refund (the refund and its reservation on the payment
commit in one transaction before the channel is called), apply the channel's word on it (its
answer, its callbacks, 补单 queries), and read refunds. Decisions are the domain's
(payments/refunds.py); each runs here in the payment's unit of work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from paygrid.channels.ports import (
    CallbackRefusal,
    CallbackReply,
    ChannelError,
    RefundCallback,
    RefundRequest,
    RefundTrade,
)
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.kernel.money import Money
from paygrid.payments import refund_repository, repository
from paygrid.payments.core import Core
from paygrid.payments.domain import Payment, request_fingerprint
from paygrid.payments.errors import PaymentRejected, not_found
from paygrid.payments.events import RefundView
from paygrid.payments.refunds import (
    REFUND_ANOMALIES,
    Admission,
    Refund,
    RefundDraft,
    RefundItem,
    RefundOutcome,
    RefundStatus,
    refused_by_channel,
)
from paygrid.payments.uow import Tx
from paygrid.payments.views import refund_view

log = logging.getLogger(__name__)
RECOVERY_BATCH = 100


@dataclass(frozen=True, slots=True)
class RequestRefund:
    """POST /v1/refunds: the payment by its id or its out_trade_no."""

    mchid: str
    payment_id: str | None
    out_trade_no: str | None
    out_refund_no: str
    amount: int
    reason: str | None = None
    notify_url: str | None = None
    items: tuple[RefundItem, ...] = ()

    def fingerprint(self, payment_id: str) -> str:
        """The request's meaning: the same payment (however named) and the same refund."""
        return request_fingerprint(
            {
                "payment_id": payment_id,
                "amount": self.amount,
                "reason": self.reason,
                "notify_url": self.notify_url,
                "items": [[i.sku, i.quantity] for i in self.items],
            }
        )


def not_found_refund(what: str) -> PaymentRejected:
    return PaymentRejected("REFUND_NOT_FOUND", f"no refund {what}")


# --- request ------------------------------------------------------------------------------------
def request_refund(core: Core, cmd: RequestRefund) -> tuple[RefundView, bool]:
    """A refund PROCESSING with its amount reserved, then the channel's answer applied. The
    same out_refund_no with the same body returns that refund (created=False); with another
    body it is DUPLICATE_OUT_REFUND_NO."""
    payment_id = _payment_id_of(core, cmd)
    fingerprint = cmd.fingerprint(payment_id)
    existing = _existing(core, cmd, fingerprint)
    if existing is not None:
        return existing, False
    draft = RefundDraft(
        refund_id=new_id("rfd", core.cell),
        mchid=cmd.mchid,
        out_refund_no=cmd.out_refund_no,
        amount=cmd.amount,
        reason=cmd.reason,
        notify_url=cmd.notify_url,
        items=cmd.items,
        request_hash=fingerprint,
    )

    def reserve(tx: Tx, current: Payment) -> Refund | None:
        if refund_repository.by_out_refund_no(tx.conn, cmd.mchid, cmd.out_refund_no):
            return None  # the same out_refund_no, committed while we waited for the payment
        order = current.paid_order
        caps = core.channels.capabilities(order.channel) if order is not None else None
        decision = current.request_refund(draft, caps, utcnow())
        if decision.outcome != Admission.ACCEPTED or decision.refund is None:
            raise PaymentRejected(decision.outcome.value, decision.problem)
        tx.save(current, decision.payment, "refund_requested")
        return decision.refund

    try:
        refund = core.uow.change(payment_id, reserve)
    except IntegrityError:  # the same out_refund_no, committed meanwhile on another payment
        existing = _existing(core, cmd, fingerprint)
        if existing is None:
            raise
        return existing, False
    if refund is None:  # found committed inside the transaction: it stays found
        existing = _existing(core, cmd, fingerprint)
        assert existing is not None, cmd.out_refund_no
        return existing, False
    log.info("refund %s of %s: %d reserved", refund.refund_id, payment_id, refund.amount)
    return refund_view(*send(core, payment_id, refund.refund_id)), True


def _payment_id_of(core: Core, cmd: RequestRefund) -> str:
    with core.uow.read() as conn:
        if cmd.payment_id is not None:
            payment = repository.get(conn, cmd.payment_id)
        else:
            assert cmd.out_trade_no is not None
            payment = repository.get_by_out_trade_no(conn, cmd.mchid, cmd.out_trade_no)
    if payment is None or payment.mchid != cmd.mchid:
        raise not_found(cmd.payment_id or f"with out_trade_no {cmd.out_trade_no!r}")
    return payment.payment_id


def _existing(core: Core, cmd: RequestRefund, fingerprint: str) -> RefundView | None:
    with core.uow.read() as conn:
        refund = refund_repository.by_out_refund_no(conn, cmd.mchid, cmd.out_refund_no)
        payment = repository.get(conn, refund.payment_id) if refund is not None else None
    if refund is None or payment is None:
        return None
    if refund.request_hash != fingerprint:
        raise PaymentRejected(
            "DUPLICATE_OUT_REFUND_NO",
            f"out_refund_no {cmd.out_refund_no!r} was used for another refund "
            f"({refund.refund_id}) with a different body",
        )
    held = payment.refund(refund.refund_id)
    assert held is not None
    return refund_view(held, payment)


def send(core: Core, payment_id: str, refund_id: str) -> tuple[Refund, Payment]:
    """Ask the channel for the refund (again: it takes one refund number once) and apply its
    answer. Trouble worth a retry leaves the refund PROCESSING for 补单; a final refusal
    ends it FAILED, releasing its reservation."""
    payment = _payment(core, payment_id)
    refund = payment.refund(refund_id)
    assert refund is not None, (payment_id, refund_id)
    order = next(o for o in payment.orders if o.order_id == refund.order_id)
    request = RefundRequest(
        refund_ref=refund.channel_ref,
        payment_ref=order.channel_ref,
        amount=Money(refund.amount, refund.currency),
        total=Money(payment.amount, payment.currency),
        notify_url=core.urls.callback_url(refund.channel),
        reason=refund.reason,
        channel_trade_no=order.channel_trade_no,
    )
    try:
        trade = core.channels.adapter(refund.channel).refund(request)
    except ChannelError as exc:
        if exc.retryable:
            log.warning("refund %s at %s: %s; 补单 resolves it", refund_id, refund.channel, exc)
            return refund, payment
        log.warning("refund %s refused by %s: %s", refund_id, refund.channel, exc)
        return _held(core.uow.change(payment_id, _refused(refund_id, exc.code)), refund_id)
    _, after = _apply(core, refund.channel, payment_id, refund_id, trade, "refund_answer", None)
    return _held(after, refund_id)


def _refused(refund_id: str, code: str) -> Callable[[Tx, Payment], Payment]:
    def change(tx: Tx, current: Payment) -> Payment:
        refund = current.refund(refund_id)
        assert refund is not None, refund_id
        decision = refused_by_channel(current, refund, code, utcnow())
        if decision.payment is not current:
            tx.save(current, decision.payment, "refund_refused")
            tx.emit_refund(decision.payment, refund_id, decision.events)
        return decision.payment

    return change


def _held(payment: Payment, refund_id: str) -> tuple[Refund, Payment]:
    refund = payment.refund(refund_id)
    assert refund is not None, refund_id
    return refund, payment


def _payment(core: Core, payment_id: str) -> Payment:
    with core.uow.read() as conn:
        payment = repository.get(conn, payment_id)
    if payment is None:
        raise not_found(payment_id)
    return payment


# --- the channel's word ---------------------------------------------------------------------
def apply_refund_trade(
    core: Core, channel: str, refund_id: str, trade: RefundTrade, cause: str
) -> RefundOutcome:
    """Apply a 补单 (query) answer about ``refund_id``; refusals are recorded once per refund,
    cause and outcome, so `paygrid check` reports them like callbacks."""
    refund = _refund(core, refund_id)
    return _apply(core, channel, refund.payment_id, refund_id, trade, cause, None)[0]


def handle_refund_callback(core: Core, channel: str, callback: RefundCallback) -> CallbackReply:
    """A verified refund callback: deduplicated by (notify id, refund), applied, answered as
    the channel expects. A repeat, late or crossing callback changes nothing."""
    adapter = core.channels.adapter(channel)
    trade, notify_id = callback.refund, callback.notify_id
    if trade.refund_ref is None:
        log.error("%s refund callback %s names no refund", channel, notify_id)
        return adapter.callback_nack("no refund number", CallbackRefusal.MALFORMED)
    with core.uow.read() as conn:
        refund = refund_repository.by_channel_ref(conn, channel, trade.refund_ref)
    if refund is None:
        log.error("%s refund callback %s: unknown refund %s", channel, notify_id, trade.refund_ref)
        return adapter.callback_nack("unknown refund", CallbackRefusal.UNKNOWN_PAYMENT)
    cause = f"callback:{channel}"
    try:
        outcome, _ = _apply(
            core, channel, refund.payment_id, refund.refund_id, trade, cause, notify_id
        )
    except PaymentRejected as exc:  # busy: the channel sends it again
        log.error("%s refund callback %s for %s: %s", channel, notify_id, refund.refund_id, exc)
        return adapter.callback_nack(exc.message, CallbackRefusal.RETRY_LATER)
    log.info("%s refund callback %s for %s: %s", channel, notify_id, refund.refund_id, outcome)
    return adapter.callback_ack()


def _apply(
    core: Core,
    channel: str,
    payment_id: str,
    refund_id: str,
    trade: RefundTrade,
    cause: str,
    notify_id: str | None,
) -> tuple[RefundOutcome, Payment]:
    account = core.channels.adapter(channel).account

    def change(tx: Tx, current: Payment) -> tuple[RefundOutcome, Payment]:
        refund = current.refund(refund_id)
        assert refund is not None, refund_id
        decision = current.apply_refund_trade(refund_id, trade, account, utcnow())
        outcome = decision.outcome
        record = refund_repository.record_callback
        if notify_id is not None:
            if not record(tx.conn, channel, notify_id, refund, trade, decision):
                return RefundOutcome.DUPLICATE_CALLBACK, current
        elif outcome in REFUND_ANOMALIES:  # a query or answer: one row per cause and outcome
            record(tx.conn, channel, f"{cause}:{outcome}", refund, trade, decision)
        if outcome in REFUND_ANOMALIES:
            log.error(
                "refund %s of %s: %s %s (%s) refused: %s: %s",
                refund_id,
                payment_id,
                channel,
                cause,
                trade.raw_state,
                outcome,
                decision.problem,
            )
        if decision.payment is not current:
            tx.save(current, decision.payment, cause)
            tx.emit_refund(decision.payment, refund_id, decision.events)
        return outcome, decision.payment

    return core.uow.change(payment_id, change)


# --- 补单 ------------------------------------------------------------------------------------
def recover_refunds(core: Core, older_than: timedelta, now: datetime | None = None) -> int:
    """补单 for refunds: ask the channel about refunds PROCESSING whose word has not come for
    ``older_than``; one the channel never received is sent again. Returns how many ended."""
    cutoff = (now or utcnow()) - older_than
    with core.uow.read() as conn:
        candidates = refund_repository.processing_since(conn, cutoff, RECOVERY_BATCH)
    return sum(_recover(core, refund_id) for refund_id in candidates)


def _recover(core: Core, refund_id: str) -> int:
    refund = _refund(core, refund_id)
    payment = _payment(core, refund.payment_id)
    order = next(o for o in payment.orders if o.order_id == refund.order_id)
    try:
        trade = core.channels.adapter(refund.channel).query_refund(
            refund.channel_ref, order.channel_ref
        )
    except ChannelError as exc:
        log.warning("补单 query for refund %s failed: %s", refund_id, exc)
        trade = None
    if trade is not None:
        outcome, after = _apply(
            core, refund.channel, refund.payment_id, refund_id, trade, "refund_recovery", None
        )
        if outcome == RefundOutcome.NOT_AT_CHANNEL:
            log.warning("refund %s never reached %s: sending it again", refund_id, refund.channel)
            _, after = send(core, refund.payment_id, refund_id)
        if _held(after, refund_id)[0].status != RefundStatus.PROCESSING:
            return 1
    _touch(core, refund.payment_id, refund_id)
    return 0


def _touch(core: Core, payment_id: str, refund_id: str) -> None:
    """Queried now: the next query of this refund waits another interval."""

    def change(tx: Tx, current: Payment) -> None:
        refund = current.refund(refund_id)
        if refund is not None and refund.status == RefundStatus.PROCESSING:
            now = utcnow()
            tx.save(current, current.with_refund(refund.touched(now), now), "refund_recovery")

    core.uow.change(payment_id, change)


# --- reads ----------------------------------------------------------------------------------
def _refund(core: Core, refund_id: str) -> Refund:
    with core.uow.read() as conn:
        refund = refund_repository.get(conn, refund_id)
    if refund is None:
        raise not_found_refund(refund_id)
    return refund


def get_refund(core: Core, refund_id: str, mchid: str | None = None) -> RefundView:
    refund = _refund(core, refund_id)
    if mchid is not None and refund.mchid != mchid:
        raise not_found_refund(refund_id)
    return refund_view(*_held(_payment(core, refund.payment_id), refund_id))


def find_refund(core: Core, mchid: str, out_refund_no: str) -> RefundView:
    with core.uow.read() as conn:
        refund = refund_repository.by_out_refund_no(conn, mchid, out_refund_no)
    if refund is None:
        raise not_found_refund(f"with out_refund_no {out_refund_no!r}")
    return refund_view(*_held(_payment(core, refund.payment_id), refund.refund_id))
