"""``/v1/payments``: create (支付下单), get, find by out_trade_no, close (关单)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from paygrid.agreements.service import AgreementService
from paygrid.api import idempotency
from paygrid.api import openapi as doc
from paygrid.api.auth import Principal
from paygrid.api.deps import (
    ApiDeps,
    call,
    check_notify_url,
    parse_body,
    require_empty_object,
    require_payment_id,
)
from paygrid.api.errors import ApiError
from paygrid.api.idempotency import Outcome
from paygrid.api.schemas import CreatePaymentIn
from paygrid.channels.ports import ChannelCapabilities, Payer
from paygrid.kernel.clock import utcnow
from paygrid.payments.domain import Discount, Item, OrderInvalid, check_items, request_fingerprint
from paygrid.payments.service import CreatePayment, PaymentService

DEFAULT_EXPIRY = timedelta(hours=2)
MIN_EXPIRY = timedelta(minutes=1)
MAX_EXPIRY = timedelta(days=7)
_OUT_TRADE_NO = re.compile(r"[A-Za-z0-9_\-|*.:]{1,64}", re.ASCII)  # as in CreatePaymentIn


def router(deps: ApiDeps) -> APIRouter:
    routes = APIRouter(tags=["payments"])

    @routes.post(
        "/v1/payments",
        status_code=201,
        operation_id="createPayment",
        summary="Create a payment",
        response_class=Response,
        responses=doc.responses(
            {
                201: (doc.Payment, "Created: the new payment."),
                200: (doc.Payment, "The existing payment: this out_trade_no with the same body."),
            },
            (409, 502),
            replayable=True,
            links=doc.PAYMENT_LINKS,
        ),
        openapi_extra=doc.operation(
            doc.IDEMPOTENCY_KEY, body=doc.json_body(CreatePaymentIn, doc.CREATE_EXAMPLE)
        ),
    )
    async def create_payment(request: Request) -> Response:
        principal, body = await deps.signed(request)

        async def create() -> Outcome:
            # In a worker thread: a payer's agreement is read from the database.
            cmd = await call(_create_command, principal, body, deps.payments, deps.agreements)
            check_notify_url(deps.notify, cmd.notify_url)
            payment, created = await call(deps.payments.create, cmd)
            return (201 if created else 200), deps.payments.resource(payment)

        mchid = principal.merchant.mchid
        return await idempotency.respond_once(deps.db, request, mchid, body, create)

    @routes.get(
        "/v1/payments/{payment_id}",
        operation_id="getPayment",
        summary="Get a payment",
        response_model=None,
        responses=doc.responses({200: (doc.Payment, "The payment.")}, (404,)),
        openapi_extra=doc.operation(doc.PAYMENT_ID),
    )
    async def get_payment(payment_id: str, request: Request) -> dict[str, Any]:
        principal, _ = await deps.signed(request)
        require_payment_id(payment_id)
        payment = await call(deps.payments.get, payment_id, principal.merchant.mchid)
        return deps.payments.resource(payment)

    @routes.get(
        "/v1/payments",
        operation_id="findPayment",
        summary="Find a payment by out_trade_no",
        response_model=None,
        responses=doc.responses({200: (doc.Payment, "The payment.")}, (404,)),
        openapi_extra=doc.operation(doc.OUT_TRADE_NO),
    )
    async def find_payment(request: Request) -> dict[str, Any]:
        principal, _ = await deps.signed(request)
        out_trade_no = request.query_params.get("out_trade_no")
        if not out_trade_no or not _OUT_TRADE_NO.fullmatch(out_trade_no):
            raise ApiError(
                400,
                "INVALID_OUT_TRADE_NO",
                "out_trade_no query parameter is required: 1-64 of A-Z a-z 0-9 _ - | * . :",
                "out_trade_no",
            )
        payment = await call(
            deps.payments.get_by_out_trade_no, principal.merchant.mchid, out_trade_no
        )
        return deps.payments.resource(payment)

    @routes.post(
        "/v1/payments/{payment_id}/close",
        operation_id="closePayment",
        summary="Close a payment",
        response_class=Response,
        responses=doc.responses(
            {200: (doc.Payment, "The payment, now CLOSED (also when it already was).")},
            (404, 409, 502),
            replayable=True,
        ),
        openapi_extra=doc.operation(doc.PAYMENT_ID, doc.IDEMPOTENCY_KEY, body=doc.EMPTY_BODY),
    )
    async def close_payment(payment_id: str, request: Request) -> Response:
        principal, body = await deps.signed(request)
        require_empty_object(body)
        require_payment_id(payment_id)
        mchid = principal.merchant.mchid

        async def close() -> Outcome:
            payment = await call(deps.payments.close, payment_id, mchid)
            return 200, deps.payments.resource(payment)

        return await idempotency.respond_once(deps.db, request, mchid, body, close)

    return routes


def _create_command(
    principal: Principal, body: bytes, payments: PaymentService, agreements: AgreementService
) -> CreatePayment:
    req = parse_body(CreatePaymentIn, body)
    merchant = principal.merchant
    payer, agreement_channel = _payer(req, merchant.mchid, agreements)
    if agreement_channel is not None:
        if req.channel not in (None, agreement_channel):
            raise ApiError(
                400, "INVALID_PAYER", f"the agreement is with {agreement_channel}", "payer"
            )
        req = req.model_copy(update={"channel": agreement_channel})
    _check_channel(req, merchant.methods, payments, payer)
    items = tuple(Item(i.sku, i.name, i.quantity, i.unit_amount) for i in req.items or ())
    discounts = tuple(Discount(d.name, d.amount) for d in req.discounts or ())
    try:
        check_items(req.amount.total, items, discounts)
    except OrderInvalid as exc:
        raise ApiError(400, exc.code, str(exc), exc.field) from None
    now = utcnow()
    expire_at = req.expire_at or now + DEFAULT_EXPIRY
    if not now + MIN_EXPIRY <= expire_at <= now + MAX_EXPIRY:
        raise ApiError(
            400,
            "INVALID_EXPIRE_AT",
            "expire_at must be between 1 minute and 7 days from now",
            "expire_at",
        )
    meaning = req.model_dump(mode="json")
    return CreatePayment(
        mchid=merchant.mchid,
        out_trade_no=req.out_trade_no,
        total=req.amount.total,
        currency=req.amount.currency,
        description=req.description,
        notify_url=req.notify_url,
        return_url=req.return_url,
        channel=req.channel,
        method=req.method,
        expire_at=expire_at,
        attach=req.attach,
        items=items,
        discounts=discounts,
        fingerprint=request_fingerprint(meaning),
        payer=payer,
        allowed_channels=frozenset(merchant.methods),
    )


def _check_channel(
    req: CreatePaymentIn, enabled: tuple[str, ...], payments: PaymentService, payer: Payer
) -> None:
    """The named channel is the merchant's, takes the currency and the method (with what the
    method needs of the payer); no channel is fine for the cashier, or when routing chooses."""
    if req.channel is not None and req.channel not in enabled:
        raise ApiError(
            400,
            "INVALID_CHANNEL",
            f"channel {req.channel} is not enabled for this merchant",
            "channel",
        )
    channels = enabled if req.channel is None else (req.channel,)
    if req.amount.currency not in payments.currencies(channels):
        raise ApiError(
            400,
            "UNSUPPORTED_CURRENCY",
            f"{req.amount.currency} is not taken by {' or '.join(channels) or 'any channel'}",
            "amount.currency",
        )
    if req.method != "cashier" and req.channel is None and not payments.routes():
        raise ApiError(400, "INVALID_CHANNEL", f"method {req.method} needs a channel", "channel")
    if req.channel is not None and req.method != "cashier":
        _check_method(payments.capabilities(req.channel), req.channel, req.method, payer)


def _payer(
    req: CreatePaymentIn, mchid: str, agreements: AgreementService
) -> tuple[Payer, str | None]:
    """What the request says of the payer; with an agreement, its bank and number (协议号),
    and the channel it is with."""
    given = req.payer
    if given is None:
        return Payer(), None
    if given.agreement_id is None:
        return Payer(given.client_ip, given.openid, given.bank), None
    agreement = agreements.signed(mchid, given.agreement_id)  # INVALID_PAYER unless SIGNED
    if given.bank not in (None, agreement.bank):
        raise ApiError(400, "INVALID_PAYER", f"the agreement is with {agreement.bank}", "payer")
    payer = Payer(given.client_ip, given.openid, agreement.bank, agreement.agreement_no)
    return payer, agreement.channel


def _check_method(caps: ChannelCapabilities, channel: str, method: str, payer: Payer) -> None:
    """An unsupported method is a clear 400 at creation, never a failure at the channel."""
    if method not in caps.methods:
        takes = ", ".join(sorted(caps.methods))
        raise ApiError(
            400, "METHOD_NOT_SUPPORTED", f"{channel} takes {takes}, not {method}", "method"
        )
    missing = caps.missing_payer_fields(method, payer)
    if missing:
        needs = ", ".join(f"payer.{m}" for m in missing)
        raise ApiError(400, "PAYER_REQUIRED", f"{channel} {method} needs {needs}", "payer")
