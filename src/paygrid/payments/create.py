"""Creating a payment (下单), once per (merchant, out_trade_no), and placing the channel order
the request asked for."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from paygrid.channels.ports import METHODS, Payer
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.payments import checkout, repository, routed
from paygrid.payments.core import Core
from paygrid.payments.domain import Discount, Item, Payment, PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.events import PaymentCreated

S = PaymentStatus
CHANNEL_METHODS = frozenset(METHODS)  # all but "cashier"


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
    payer: Payer = field(default_factory=Payer)
    allowed_channels: frozenset[str] = frozenset()  # the merchant's enabled channels (routing)

    @property
    def wants_order(self) -> bool:
        return self.channel is not None and self.method in CHANNEL_METHODS

    @property
    def wants_route(self) -> bool:
        """A channel method without a channel: routing chooses it."""
        return self.channel is None and self.method in CHANNEL_METHODS


def create(core: Core, cmd: CreatePayment) -> tuple[Payment, bool]:
    """A repeat with the same body returns the existing payment (created=False), a different
    body is DUPLICATE_OUT_TRADE_NO."""
    if cmd.channel is not None:
        core.channels.check_currency(cmd.channel, cmd.currency)
        if cmd.wants_order:
            checkout.check_method(core, cmd.channel, cmd.method, cmd.payer)
    # Insert first: a repeat of the out_trade_no is rare and is found by the unique key.
    payment = _new_payment(core, cmd)
    order = None
    if cmd.wants_order:
        assert cmd.channel is not None
        order = checkout.new_order(core, payment, cmd.channel, cmd.method)
        payment = payment.request_order(order, payment.created_at)  # in the same transaction
    try:
        with core.uow.begin() as tx:
            tx.add(payment, (PaymentCreated,))
    except IntegrityError:
        existing = _existing(core, cmd)  # this out_trade_no exists (maybe a race just now)
        if existing is None:
            raise
        return _continue(core, existing, cmd), False
    if cmd.wants_route:
        return routed.start(core, payment, cmd.method, cmd.payer, cmd.allowed_channels), True
    if order is None:
        return payment, True
    return checkout.place(core, payment, order, cmd.payer), True


def _new_payment(core: Core, cmd: CreatePayment) -> Payment:
    now = utcnow()
    return Payment(
        payment_id=new_id("pay", core.cell),
        mchid=cmd.mchid,
        out_trade_no=cmd.out_trade_no,
        amount=cmd.total,
        currency=cmd.currency,
        description=cmd.description,
        notify_url=cmd.notify_url,
        return_url=cmd.return_url,
        method=cmd.method,
        status=S.CREATED,
        expire_at=cmd.expire_at,
        attach=cmd.attach,
        items=cmd.items,
        discounts=cmd.discounts,
        request_hash=cmd.fingerprint,
        refunded_amount=0,
        paid_at=None,
        closed_at=None,
        cashier_token=secrets.token_urlsafe(18),
        created_at=now,
        updated_at=now,
        version=1,
        payer_bank=cmd.payer.bank,
    )


def _continue(core: Core, payment: Payment, cmd: CreatePayment) -> Payment:
    """Place the channel order the request asked for; a repeat after a channel failure picks
    up where the first attempt stopped."""
    if cmd.wants_route and payment.status == S.CREATED:
        return routed.start(core, payment, cmd.method, cmd.payer, cmd.allowed_channels)
    if not cmd.wants_order or payment.status != S.CREATED:
        return payment
    assert cmd.channel is not None
    return checkout.start(core, payment, cmd.channel, cmd.method, cmd.payer)


def _existing(core: Core, cmd: CreatePayment) -> Payment | None:
    with core.uow.read() as conn:
        existing = repository.get_by_out_trade_no(conn, cmd.mchid, cmd.out_trade_no)
    if existing is not None and existing.request_hash != cmd.fingerprint:
        raise PaymentRejected(
            "DUPLICATE_OUT_TRADE_NO",
            f"out_trade_no {cmd.out_trade_no!r} was used for another "
            f"payment ({existing.payment_id}) with a different body",
        )
    return existing
