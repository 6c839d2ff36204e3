"""The payment core's use cases behind one facade (the API, the cashier, the gateway and the
workers call these): create, place the channel order, close, apply the channel's truth
(callback or 补单 query), expire; refund, and 补单 for refunds. Each state change commits with
its events (outbox)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from paygrid.channels.ports import (
    CallbackReply,
    ChannelAdapter,
    ChannelCapabilities,
    Payer,
    RefundTrade,
    Trade,
)
from paygrid.payments import checkout, lifecycle, refund_cases, repository, routed, truth
from paygrid.payments.core import Channels, Core, Urls
from paygrid.payments.create import CreatePayment, create
from paygrid.payments.domain import ChannelOutcome, Payment
from paygrid.payments.errors import PaymentRejected, not_found
from paygrid.payments.events import PaymentView, RefundView
from paygrid.payments.refund_cases import RequestRefund
from paygrid.payments.refunds import RefundOutcome
from paygrid.payments.uow import UnitOfWork
from paygrid.payments.views import payment_view
from paygrid.routing.service import RoutingService
from paygrid.storage.database import Database

__all__ = ["CreatePayment", "PaymentService", "RequestRefund", "Urls"]


class PaymentService:
    def __init__(
        self,
        db: Database,
        channels: Mapping[str, ChannelAdapter],
        urls: Urls,
        cell: int = 0,
        routing: RoutingService | None = None,
    ) -> None:
        self.urls = urls
        self.channels = Channels(channels)
        self.core = Core(UnitOfWork(db, self.view), self.channels, urls, cell, routing)

    def routes(self) -> bool:
        """True when routing rules are in force: a payment may leave its channel to routing."""
        return routed.routable(self.core)

    # --- reads ----------------------------------------------------------------------------
    def get(self, payment_id: str, mchid: str | None = None) -> Payment:
        with self.core.uow.read() as conn:
            payment = repository.get(conn, payment_id)
        if payment is None or (mchid is not None and payment.mchid != mchid):
            raise not_found(payment_id)
        return payment

    def get_by_out_trade_no(self, mchid: str, out_trade_no: str) -> Payment:
        with self.core.uow.read() as conn:
            payment = repository.get_by_out_trade_no(conn, mchid, out_trade_no)
        if payment is None:
            raise PaymentRejected(
                "PAYMENT_NOT_FOUND", f"no payment with out_trade_no {out_trade_no!r}"
            )
        return payment

    def view(self, payment: Payment) -> PaymentView:
        return payment_view(payment, self.urls.cashier_base_url)

    def resource(self, payment: Payment) -> dict[str, object]:
        return self.view(payment).resource()

    @property
    def channel_names(self) -> frozenset[str]:
        return self.channels.names

    def capabilities(self, channel: str) -> ChannelCapabilities:
        return self.channels.capabilities(channel)

    def currencies(self, channels: Iterable[str]) -> frozenset[str]:
        return self.channels.currencies(channels)

    # --- use cases ------------------------------------------------------------------------
    def create(self, cmd: CreatePayment) -> tuple[Payment, bool]:
        return create(self.core, cmd)

    def start_channel_payment(
        self, payment_id: str, channel: str, method: str, payer: Payer | None = None
    ) -> Payment:
        """Place (or reuse) the channel order so the payer can pay; CREATED -> PAYING."""
        payment = self.get(payment_id)
        return checkout.start(self.core, payment, channel, method, payer or Payer())

    def close(self, payment_id: str, mchid: str | None, cause: str = "merchant_close") -> Payment:
        return lifecycle.close(self.core, self.get(payment_id, mchid), cause)

    def handle_callback(
        self, channel: str, headers: Mapping[str, str], body: bytes
    ) -> CallbackReply:
        return truth.handle_callback(self.core, channel, headers, body)

    def apply_trade(
        self, channel: str, payment_id: str, trade: Trade, cause: str
    ) -> ChannelOutcome:
        return truth.apply_trade(self.core, channel, payment_id, trade, cause)

    def expire_due(self, now: datetime | None = None) -> int:
        return lifecycle.expire_due(self.core, self.get, now)

    def recover_pending(self, older_than: timedelta, now: datetime | None = None) -> int:
        return lifecycle.recover_pending(self.core, self.get, older_than, now)

    # --- refunds (退款) ----------------------------------------------------------------------
    def request_refund(self, cmd: RequestRefund) -> tuple[RefundView, bool]:
        """The refund (created=True), or the existing one for a repeated out_refund_no."""
        return refund_cases.request_refund(self.core, cmd)

    def get_refund(self, refund_id: str, mchid: str | None = None) -> RefundView:
        return refund_cases.get_refund(self.core, refund_id, mchid)

    def find_refund(self, mchid: str, out_refund_no: str) -> RefundView:
        return refund_cases.find_refund(self.core, mchid, out_refund_no)

    def apply_refund_trade(
        self, channel: str, refund_id: str, trade: RefundTrade, cause: str
    ) -> RefundOutcome:
        return refund_cases.apply_refund_trade(self.core, channel, refund_id, trade, cause)

    def recover_refunds(self, older_than: timedelta, now: datetime | None = None) -> int:
        """补单 for refunds PROCESSING longer than ``older_than``; returns how many ended."""
        return refund_cases.recover_refunds(self.core, older_than, now)
