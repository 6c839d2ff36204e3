"""``/v1/refunds``: refund (退款) a successful payment, wholly or in part, get a refund, find one
by out_refund_no. A refund answers at once, usually PROCESSING; its end comes as a
notification (refund.succeeded / refund.failed) and on GET."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response

from paygrid.api import idempotency
from paygrid.api import openapi as doc
from paygrid.api.auth import Principal
from paygrid.api.deps import ApiDeps, call, check_notify_url, parse_body
from paygrid.api.errors import ApiError
from paygrid.api.idempotency import Outcome
from paygrid.api.schemas import CreateRefundIn
from paygrid.kernel.ids import is_id
from paygrid.payments.refunds import RefundItem
from paygrid.payments.service import RequestRefund

_OUT_REFUND_NO = re.compile(r"[A-Za-z0-9_\-|*.:]{1,64}", re.ASCII)  # as in CreateRefundIn


def router(deps: ApiDeps) -> APIRouter:
    routes = APIRouter(tags=["refunds"])

    @routes.post(
        "/v1/refunds",
        status_code=201,
        operation_id="createRefund",
        summary="Refund a payment, wholly or in part",
        response_class=Response,
        responses=doc.responses(
            {
                201: (doc.Refund, "Created: the new refund (usually PROCESSING)."),
                200: (doc.Refund, "The existing refund: this out_refund_no with the same body."),
            },
            (404, 409),
            replayable=True,
            links=doc.REFUND_LINKS,
        ),
        openapi_extra=doc.operation(
            doc.IDEMPOTENCY_KEY, body=doc.json_body(CreateRefundIn, doc.CREATE_REFUND_EXAMPLE)
        ),
    )
    async def create_refund(request: Request) -> Response:
        principal, body = await deps.signed(request)

        async def create() -> Outcome:
            cmd = _refund_command(principal, body)
            if cmd.notify_url is not None:
                check_notify_url(deps.notify, cmd.notify_url)
            refund, created = await call(deps.payments.request_refund, cmd)
            return (201 if created else 200), refund.resource()

        mchid = principal.merchant.mchid
        return await idempotency.respond_once(deps.db, request, mchid, body, create)

    @routes.get(
        "/v1/refunds/{refund_id}",
        operation_id="getRefund",
        summary="Get a refund",
        response_model=None,
        responses=doc.responses({200: (doc.Refund, "The refund.")}, (404,)),
        openapi_extra=doc.operation(doc.REFUND_ID),
    )
    async def get_refund(refund_id: str, request: Request) -> dict[str, Any]:
        principal, _ = await deps.signed(request)
        if not is_id(refund_id, "rfd"):  # names nothing: not looked up
            raise ApiError(404, "REFUND_NOT_FOUND", "no such refund")
        refund = await call(deps.payments.get_refund, refund_id, principal.merchant.mchid)
        return refund.resource()

    @routes.get(
        "/v1/refunds",
        operation_id="findRefund",
        summary="Find a refund by out_refund_no",
        response_model=None,
        responses=doc.responses({200: (doc.Refund, "The refund.")}, (404,)),
        openapi_extra=doc.operation(doc.OUT_REFUND_NO),
    )
    async def find_refund(request: Request) -> dict[str, Any]:
        principal, _ = await deps.signed(request)
        out_refund_no = request.query_params.get("out_refund_no")
        if not out_refund_no or not _OUT_REFUND_NO.fullmatch(out_refund_no):
            raise ApiError(
                400,
                "INVALID_OUT_REFUND_NO",
                "out_refund_no query parameter is required: 1-64 of A-Z a-z 0-9 _ - | * . :",
                "out_refund_no",
            )
        refund = await call(deps.payments.find_refund, principal.merchant.mchid, out_refund_no)
        return refund.resource()

    return routes


def _refund_command(principal: Principal, body: bytes) -> RequestRefund:
    req = parse_body(CreateRefundIn, body)
    if (req.payment_id is None) == (req.out_trade_no is None):
        raise ApiError(
            400,
            "INVALID_PAYMENT_ID",
            "name the payment by payment_id or by out_trade_no (one of them)",
            "payment_id",
        )
    return RequestRefund(
        mchid=principal.merchant.mchid,
        payment_id=req.payment_id,
        out_trade_no=req.out_trade_no,
        out_refund_no=req.out_refund_no,
        amount=req.amount,
        reason=req.reason,
        notify_url=req.notify_url,
        items=tuple(RefundItem(i.sku, i.quantity) for i in req.items or ()),
    )
