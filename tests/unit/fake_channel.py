"""An in-memory channel for unit tests only (integration tests use the real sandbox)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from paygrid.channels.ports import (
    BillLine,
    Callback,
    CallbackRefusal,
    CallbackRejected,
    CallbackReply,
    ChannelAccount,
    ChannelCapabilities,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    PayerAction,
    PayerActionKind,
    RefundCallback,
    RefundRequest,
    RefundState,
    RefundTrade,
    Trade,
    TradeState,
)
from paygrid.kernel.money import Money

CAPABILITIES = ChannelCapabilities(
    methods=frozenset({"native"}),
    currencies=frozenset({"CNY"}),
    partial_refunds=True,
    refund_window=timedelta(days=365),
    bill_types=frozenset({"ALL"}),
    cashier_methods=("native",),
)


@dataclass
class FakeChannel:
    name: str = "wechatpay"
    account: ChannelAccount = field(default_factory=lambda: ChannelAccount("fake-mch", "fake-app"))
    capabilities: ChannelCapabilities = field(default_factory=lambda: CAPABILITIES)
    orders: dict[str, OrderRequest] = field(default_factory=dict)
    states: dict[str, TradeState] = field(default_factory=dict)
    sent: list[bytes] = field(default_factory=list)  # every callback body ever emitted
    # What the channel reports as paid where that is not the order's amount (a wrong amount or
    # currency in its callbacks and query answers): paygrid must never take it as a success.
    misreported: dict[str, Money] = field(default_factory=dict)
    refunds: dict[str, RefundRequest] = field(default_factory=dict)  # by refund_ref
    refund_states: dict[str, RefundState] = field(default_factory=dict)
    refund_errors: list[ChannelError] = field(default_factory=list)  # raised by the next calls
    refund_calls: int = 0

    def create_order(self, request: OrderRequest) -> PayerAction:
        if self.states.get(request.payment_ref) in (TradeState.SUCCESS, TradeState.CLOSED):
            from paygrid.channels.ports import ChannelError

            raise ChannelError("ORDER_FINAL", "order is final")
        self.orders[request.payment_ref] = request
        self.states.setdefault(request.payment_ref, TradeState.PENDING)
        url = f"weixin://wxpay/bizpayurl?pr={request.payment_ref}"
        return PayerAction(PayerActionKind.QR_CODE, content=url)

    def pay(
        self, ref: str, outcome: TradeState = TradeState.SUCCESS, reported: Money | None = None
    ) -> bytes | None:
        """The payer pays; returns the callback body the channel would send. ``reported``: the
        channel answers with this amount instead of the order's (callbacks and queries)."""
        if self.states.get(ref) != TradeState.PENDING:
            return None
        self.states[ref] = outcome
        if reported is not None and reported != self.orders[ref].amount:
            self.misreported[ref] = reported
        return self._callback(ref)

    def payable(self, ref: str) -> bool:
        """True while a payer could still pay this order at the channel."""
        return ref in self.orders and self.states.get(ref) == TradeState.PENDING

    def _reported(self, ref: str) -> Money:
        return self.misreported.get(ref, self.orders[ref].amount)

    def _callback(self, ref: str) -> bytes:
        amount = self._reported(ref)
        body = json.dumps(
            {
                "id": f"n{len(self.sent)}",
                "ref": ref,
                "state": self.states[ref].value,
                "amount": amount.minor,
                "currency": amount.currency,
            }
        ).encode()
        self.sent.append(body)
        return body

    def query(self, payment_ref: str) -> Trade:
        state = self.states.get(payment_ref, TradeState.NOT_FOUND)
        order = self.orders.get(payment_ref)
        return Trade(
            payment_ref,
            state,
            channel_trade_no=f"wx{payment_ref}",
            amount=self._reported(payment_ref) if order else None,
            paid_at=datetime.now(UTC) if state == TradeState.SUCCESS else None,
            merchant_id=self.account.merchant_id,
            app_id=self.account.app_id,
        )

    def close(self, payment_ref: str) -> CloseOutcome:
        if self.states.get(payment_ref) == TradeState.SUCCESS:
            return CloseOutcome.ALREADY_PAID
        if payment_ref in self.orders:
            self.states[payment_ref] = TradeState.CLOSED
        return CloseOutcome.CLOSED

    # --- refunds ---------------------------------------------------------------------------
    def refund(self, request: RefundRequest) -> RefundTrade:
        """Idempotent on refund_ref; refuses (finally) a refund above what remains."""
        self.refund_calls += 1
        if self.refund_errors:
            raise self.refund_errors.pop(0)
        if request.refund_ref not in self.refunds:
            if self.states.get(request.payment_ref) != TradeState.SUCCESS:
                raise ChannelError("RESOURCE_NOT_EXISTS", "no such paid order")
            taken = sum(
                r.amount.minor
                for ref, r in self.refunds.items()
                if r.payment_ref == request.payment_ref
                and self.refund_states[ref] != RefundState.FAILED
            )
            if taken + request.amount.minor > self.orders[request.payment_ref].amount.minor:
                raise ChannelError("INVALID_REQUEST", "above what remains refundable")
            self.refunds[request.refund_ref] = request
            self.refund_states[request.refund_ref] = RefundState.PROCESSING
        return self.refund_trade(request.refund_ref)

    def refund_trade(self, refund_ref: str, amount: Money | None = None) -> RefundTrade:
        request = self.refunds[refund_ref]
        state = self.refund_states[refund_ref]
        return RefundTrade(
            refund_ref,
            state,
            payment_ref=request.payment_ref,
            channel_refund_no=f"wxr{refund_ref}",
            amount=amount or request.amount,
            succeeded_at=datetime.now(UTC) if state == RefundState.SUCCESS else None,
            raw_state=state.value,
            merchant_id=self.account.merchant_id,
        )

    def settle_refund(
        self, refund_ref: str, state: RefundState = RefundState.SUCCESS, amount: int | None = None
    ) -> bytes:
        """The channel ends a refund; returns the callback body it would send (``amount``: it
        reports this amount instead of the refund's)."""
        self.refund_states[refund_ref] = state
        body = {"id": f"rn{len(self.sent)}", "refund_ref": refund_ref, "state": state.value}
        if amount is not None:
            body["amount"] = amount
        encoded = json.dumps(body).encode()
        self.sent.append(encoded)
        return encoded

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade:
        if refund_ref not in self.refunds:
            return RefundTrade(refund_ref, RefundState.NOT_FOUND, raw_state="NOT_FOUND")
        return self.refund_trade(refund_ref)

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback | RefundCallback:
        if headers.get("x-fake-signature") != "ok":
            raise CallbackRejected("bad signature")
        data = json.loads(body)
        if "refund_ref" in data:
            said = data.get("amount")
            amount = None if said is None else Money(said, "CNY")
            return RefundCallback(data["id"], self.refund_trade(data["refund_ref"], amount))
        trade = Trade(
            data["ref"],
            TradeState(data["state"]),
            channel_trade_no=f"wx{data['ref']}",
            amount=Money(data["amount"], data.get("currency", "CNY")),
            paid_at=datetime.now(UTC),
            merchant_id=self.account.merchant_id,
            app_id=self.account.app_id,
        )
        return Callback(data["id"], trade)

    def callback_ack(self) -> CallbackReply:
        return CallbackReply(204)

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        return CallbackReply(400, json.dumps({"code": "FAIL", "message": reason}).encode())

    def download_bill(self, bill_date: date) -> bytes:
        return b""

    def parse_bill(self, content: bytes) -> list[BillLine]:
        return []
