"""``/v1/agreements``: sign a payer's bank account with a channel that debits accounts
(协议签约: request, then confirm with the SMS code), and read an agreement."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from paygrid.agreements.service import RequestAgreement, resource
from paygrid.api import idempotency
from paygrid.api import openapi as doc
from paygrid.api.auth import Principal
from paygrid.api.deps import ApiDeps, call, parse_body
from paygrid.api.errors import ApiError
from paygrid.api.idempotency import Outcome
from paygrid.api.schemas import ConfirmAgreementIn, CreateAgreementIn
from paygrid.kernel.ids import is_id


def router(deps: ApiDeps) -> APIRouter:
    routes = APIRouter(tags=["agreements"])

    @routes.post(
        "/v1/agreements",
        status_code=201,
        operation_id="createAgreement",
        summary="Sign an agreement for the payer's bank account (step one: the SMS code)",
        response_class=Response,
        responses=doc.responses(
            {
                201: (
                    doc.Agreement,
                    "Created: PENDING_CODE (the bank texted the payer a code) "
                    "or FAILED (``message`` says why).",
                ),
                200: (
                    doc.Agreement,
                    "The existing agreement: this out_agreement_no with the same body.",
                ),
            },
            (409, 502),
            replayable=True,
            links=doc.AGREEMENT_LINKS,
        ),
        openapi_extra=doc.operation(
            doc.IDEMPOTENCY_KEY,
            body=doc.json_body(CreateAgreementIn, doc.CREATE_AGREEMENT_EXAMPLE),
        ),
    )
    async def create_agreement(request: Request) -> Response:
        principal, body = await deps.signed(request)

        async def create() -> Outcome:
            cmd = _request(principal, body)
            agreement, created = await call(deps.agreements.request, cmd)
            return (201 if created else 200), resource(agreement)

        mchid = principal.merchant.mchid
        return await idempotency.respond_once(deps.db, request, mchid, body, create)

    @routes.post(
        "/v1/agreements/{agreement_id}/confirm",
        operation_id="confirmAgreement",
        summary="Confirm an agreement with the payer's SMS code (step two)",
        response_class=Response,
        responses=doc.responses(
            {200: (doc.Agreement, "SIGNED; PENDING_CODE again after a wrong code; or FAILED.")},
            (404, 409, 502),
            replayable=True,
        ),
        openapi_extra=doc.operation(
            doc.AGREEMENT_ID,
            doc.IDEMPOTENCY_KEY,
            body=doc.json_body(ConfirmAgreementIn, {"sms_code": "123456"}),
        ),
    )
    async def confirm_agreement(agreement_id: str, request: Request) -> Response:
        principal, body = await deps.signed(request)
        mchid = principal.merchant.mchid

        async def confirm() -> Outcome:
            _require_agreement_id(agreement_id)
            code = parse_body(ConfirmAgreementIn, body).sms_code
            agreement = await call(deps.agreements.confirm, mchid, agreement_id, code)
            return 200, resource(agreement)

        return await idempotency.respond_once(deps.db, request, mchid, body, confirm)

    @routes.get(
        "/v1/agreements/{agreement_id}",
        operation_id="getAgreement",
        summary="Get an agreement",
        response_model=None,
        responses=doc.responses({200: (doc.Agreement, "The agreement.")}, (404,)),
        openapi_extra=doc.operation(doc.AGREEMENT_ID),
    )
    async def get_agreement(agreement_id: str, request: Request) -> dict[str, Any]:
        principal, _ = await deps.signed(request)
        _require_agreement_id(agreement_id)
        agreement = await call(deps.agreements.get, principal.merchant.mchid, agreement_id)
        return resource(agreement)

    return routes


def _require_agreement_id(agreement_id: str) -> None:
    if not is_id(agreement_id, "agr"):  # names nothing: not looked up
        raise ApiError(404, "AGREEMENT_NOT_FOUND", "no such agreement")


def _request(principal: Principal, body: bytes) -> RequestAgreement:
    req = parse_body(CreateAgreementIn, body)
    merchant = principal.merchant
    if req.channel is not None and req.channel not in merchant.methods:
        raise ApiError(
            400, "INVALID_CHANNEL", f"channel {req.channel} is not enabled for you", "channel"
        )
    return RequestAgreement(
        mchid=merchant.mchid,
        out_agreement_no=req.out_agreement_no,
        channel=req.channel,
        bank=req.bank,
        account_no=req.account_no,
        holder_name=req.holder_name,
        id_type=req.id_type,
        id_no=req.id_no,
        mobile=req.mobile,
        allowed_channels=frozenset(merchant.methods),
    )
