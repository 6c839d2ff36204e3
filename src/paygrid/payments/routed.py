"""A payment whose channel routing chooses (路由下单), with failover: when the chosen channel
never accepted the order, the order is closed there and the next eligible channel gets a new
channel order on the same payment — never two live ones."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection

from paygrid.channels.ports import Payer
from paygrid.payments import checkout, repository
from paygrid.payments.core import Core
from paygrid.payments.domain import Payment, PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.routing.decide import RouteDecision
from paygrid.routing.rules import RouteRequest

log = logging.getLogger(__name__)
MAX_FAILOVERS = 3  # channels tried for one placement at most, after the first
_NEVER_ACCEPTED = frozenset({"CHANNEL_UNAVAILABLE", "CHANNEL_ERROR"})


def routable(core: Core) -> bool:
    return core.routing is not None and core.routing.configured()


def start(
    core: Core, payment: Payment, method: str, payer: Payer, allowed: Collection[str]
) -> Payment:
    """Route ``payment`` and place its order; on a channel that never accepted it, fail over.
    A payment that already has a live order tries that channel first: a retry never flips
    it while the channel may still take it."""
    exclude: dict[str, str] = {}
    live = next((o for o in payment.orders if o.live), None)
    while True:
        if live is not None:
            channel, route, method_here = live.channel, None, live.method
        else:
            decision = _decide(core, payment, method, payer, allowed, exclude)
            if decision.channel is None:
                code = "NO_ROUTE" if decision.rule is None else "NO_CHANNEL_AVAILABLE"
                why = f"no channel can take this payment: {decision.reason}"
                raise PaymentRejected(code, why)
            channel, route, method_here = decision.channel, _route_json(decision, payer), method
        try:
            return checkout.start(core, payment, channel, method_here, payer, route)
        except PaymentRejected as exc:
            if exc.code not in _NEVER_ACCEPTED or len(exclude) >= MAX_FAILOVERS:
                raise
            payment = _withdraw(core, payment.payment_id, channel, exc)
            if payment.status not in (PaymentStatus.CREATED, PaymentStatus.PAYING):
                return payment  # paid (or closed) meanwhile: its state stands
            exclude[channel] = f"order not accepted: {exc.code}"
            live = None
            log.warning("routing: %s failed over from %s (%s)", payment.payment_id, channel, exc)


def _decide(
    core: Core,
    payment: Payment,
    method: str,
    payer: Payer,
    allowed: Collection[str],
    exclude: dict[str, str],
) -> RouteDecision:
    assert core.routing is not None
    bank = payer.bank or payment.payer_bank
    req = RouteRequest(
        payment.payment_id, payment.mchid, method, payment.amount, payment.currency, bank
    )

    def ineligible(channel: str) -> str | None:
        if channel not in allowed:
            return "not enabled for the merchant"
        if channel not in core.channels.names:
            return "not configured in this platform"
        caps = core.channels.capabilities(channel)
        if payment.currency not in caps.currencies:
            return f"does not take {payment.currency}"
        if method not in caps.methods:
            return f"does not take method {method}"
        missing = caps.missing_payer_fields(method, payer)
        return f"needs payer.{', payer.'.join(missing)}" if missing else None

    return core.routing.decide(req, ineligible, exclude)


def _withdraw(core: Core, payment_id: str, channel: str, cause: PaymentRejected) -> Payment:
    """Close the refused order at its channel, so it can never be paid beside the next one.
    If the channel cannot confirm that, we cannot be sure it was never accepted: no failover."""
    with core.uow.read() as conn:
        payment = repository.get(conn, payment_id)
    assert payment is not None
    order = next((o for o in payment.orders if o.live and o.channel == channel), None)
    if order is not None:
        try:
            checkout.close_order(core, payment, order)
        except PaymentRejected as exc:
            if exc.code != "PAYMENT_ALREADY_PAID":
                raise cause from None  # the first refusal is what the caller should see
        with core.uow.read() as conn:
            payment = repository.get(conn, payment_id)
        assert payment is not None
    return payment


def _route_json(decision: RouteDecision, payer: Payer) -> str:
    body = decision.to_json()
    body["bank"] = payer.bank
    return json.dumps(body, ensure_ascii=False, sort_keys=True)
