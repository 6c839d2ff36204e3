"""The merchant API as a FastAPI app. Handlers are thin: authenticate, validate, call the
payment core in a worker thread, shape the response. The channel callback endpoint (the
gateway's inbound side) is mounted here too in the embedded profile."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from paygrid.api import idempotency
from paygrid.api.auth import Principal, authenticate
from paygrid.api.errors import PAYMENT_CODE_STATUS, ApiError
from paygrid.api.schemas import CreatePaymentIn
from paygrid.gateway.app import callback_router
from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE, business_date, utcnow
from paygrid.merchants.vault import Vault
from paygrid.notify.service import NotificationNotFound, NotifyService
from paygrid.ops.observability import add_ops_routes, observe_request, request_id_var
from paygrid.payments.domain import Discount, Item, OrderInvalid, check_items, request_fingerprint
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import CreatePayment, PaymentService
from paygrid.reports.merchant_bill import merchant_bill_csv
from paygrid.storage.database import Database, DatabaseUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024
DEFAULT_EXPIRY = timedelta(hours=2)
MIN_EXPIRY = timedelta(minutes=1)
MAX_EXPIRY = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ApiDeps:
    db: Database
    payments: PaymentService
    notify: NotifyService
    zone: str = DEFAULT_BUSINESS_ZONE
    _: KW_ONLY
    vault: Vault  # opens the merchants' sealed secrets


def _error_response(
    request: Request, status: int, code: str, message: str, field: str | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "request_id": getattr(request.state, "request_id", ""),
    }
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def _field_code(loc: tuple[int | str, ...]) -> tuple[str, str]:
    names = [str(p) for p in loc if not isinstance(p, int)]
    field = ".".join(str(p) for p in loc)
    top = names[-1] if names and names[-1] == "currency" else (names[0] if names else "body")
    return f"INVALID_{top.upper()}", field


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(
        title="paygrid merchant API",
        version="1",
        description="Merchant API v1. Every call is signed (PAYGRID-HMAC-SHA256); "
        "amounts are integers of minor units (fen).",
    )

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = "req_" + secrets.token_hex(10)
        token = request_id_var.set(request.state.request_id)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except DatabaseUnavailable:
            response = _error_response(
                request, 503, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later"
            )
        finally:
            request_id_var.reset(token)
        response.headers["Request-Id"] = request.state.request_id
        route = request.scope.get("route")
        observe_request(
            "api",
            request.method,
            getattr(route, "path", "unmatched"),
            response.status_code,
            started,
        )
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(request, exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return _error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(DatabaseUnavailable)
    async def db_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return _error_response(
            request, 503, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later"
        )

    async def call(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await run_in_threadpool(fn, *args)
        except PaymentRejected as exc:
            raise ApiError(PAYMENT_CODE_STATUS.get(exc.code, 400), exc.code, exc.message) from None

    async def signed(request: Request) -> tuple[Principal, bytes]:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "BODY_TOO_LARGE", f"body exceeds {MAX_BODY_BYTES} bytes")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        principal = await run_in_threadpool(
            authenticate,
            deps.db,
            deps.vault,
            request.headers.get("authorization"),
            request.method,
            target,
            body,
        )
        return principal, body

    def payment_json(payment: Any) -> dict[str, Any]:
        return deps.payments.resource(payment)

    # --- health and metrics: /healthz, /readyz, /metrics ---------------------------------
    add_ops_routes(app, {"database": deps.db.ping})

    # --- payments -------------------------------------------------------------------------
    @app.post("/v1/payments", status_code=201, tags=["payments"])
    async def create_payment(request: Request) -> Response:
        principal, body = await signed(request)
        key = request.headers.get("idempotency-key")
        mchid = principal.merchant.mchid
        if key is not None:
            fingerprint = idempotency.request_hash("POST", "/v1/payments", body)
            replay = await call(idempotency.begin, deps.db, mchid, key, fingerprint)
            if replay is not None:
                return Response(
                    replay.body,
                    status_code=replay.status,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
        try:
            cmd = _create_command(principal, body)
            payment, created = await call(deps.payments.create, cmd)
        except BaseException:
            if key is not None:
                await run_in_threadpool(idempotency.abandon, deps.db, mchid, key)
            raise
        status = 201 if created else 200
        text = json.dumps(payment_json(payment), ensure_ascii=False)
        if key is not None:
            await run_in_threadpool(idempotency.complete, deps.db, mchid, key, status, text)
        return Response(text, status_code=status, media_type="application/json")

    @app.get("/v1/payments/{payment_id}", tags=["payments"])
    async def get_payment(payment_id: str, request: Request) -> dict[str, Any]:
        principal, _ = await signed(request)
        payment = await call(deps.payments.get, payment_id, principal.merchant.mchid)
        return payment_json(payment)

    @app.get("/v1/payments", tags=["payments"])
    async def find_payment(request: Request) -> dict[str, Any]:
        principal, _ = await signed(request)
        out_trade_no = request.query_params.get("out_trade_no")
        if not out_trade_no:
            raise ApiError(
                400,
                "INVALID_OUT_TRADE_NO",
                "out_trade_no query parameter is required",
                "out_trade_no",
            )
        payment = await call(
            deps.payments.get_by_out_trade_no, principal.merchant.mchid, out_trade_no
        )
        return payment_json(payment)

    @app.post("/v1/payments/{payment_id}/close", tags=["payments"])
    async def close_payment(payment_id: str, request: Request) -> Response:
        principal, body = await signed(request)
        _require_empty_object(body)
        key = request.headers.get("idempotency-key")
        mchid = principal.merchant.mchid
        if key is not None:
            path = f"/v1/payments/{payment_id}/close"
            replay = await call(
                idempotency.begin, deps.db, mchid, key, idempotency.request_hash("POST", path, body)
            )
            if replay is not None:
                return Response(
                    replay.body, status_code=replay.status, media_type="application/json"
                )
        try:
            payment = await call(deps.payments.close, payment_id, mchid)
        except BaseException:
            if key is not None:
                await run_in_threadpool(idempotency.abandon, deps.db, mchid, key)
            raise
        text = json.dumps(payment_json(payment), ensure_ascii=False)
        if key is not None:
            await run_in_threadpool(idempotency.complete, deps.db, mchid, key, 200, text)
        return Response(text, status_code=200, media_type="application/json")

    # --- bills (商户对账单) -------------------------------------------------------------------
    @app.get("/v1/bills/{bill_date}", tags=["bills"])
    async def merchant_bill(bill_date: str, request: Request) -> Response:
        principal, _ = await signed(request)
        try:
            day = date.fromisoformat(bill_date)
        except ValueError:
            raise ApiError(
                400, "INVALID_BILL_DATE", "bill date must be yyyy-mm-dd", "bill_date"
            ) from None
        today = business_date(utcnow(), deps.zone)
        if day > today:
            raise ApiError(
                400, "INVALID_BILL_DATE", "that business date has not begun", "bill_date"
            )
        text = await call(merchant_bill_csv, deps.db, principal.merchant.mchid, day, deps.zone)
        filename = f"paygrid-bill-{principal.merchant.mchid}-{day.isoformat()}.csv"
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Paygrid-Bill-Complete": "true" if day < today else "false",
            },
        )

    # --- notifications --------------------------------------------------------------------
    @app.get("/v1/notifications", tags=["notifications"])
    async def list_notifications(request: Request) -> dict[str, Any]:
        principal, _ = await signed(request)
        payment_id = request.query_params.get("payment_id")
        items = await call(deps.notify.list_for, principal.merchant.mchid, payment_id)
        return {"data": items}

    @app.post("/v1/notifications/{notify_id}/resend", tags=["notifications"])
    async def resend_notification(notify_id: str, request: Request) -> dict[str, Any]:
        principal, body = await signed(request)
        _require_empty_object(body)
        try:
            return await call(deps.notify.resend, notify_id, principal.merchant.mchid)
        except NotificationNotFound:
            raise ApiError(404, "NOTIFICATION_NOT_FOUND", f"no notification {notify_id}") from None

    # --- channel callbacks (回调), the gateway's inbound side, on this port when embedded --
    app.include_router(callback_router(deps.payments))

    return app


def _require_empty_object(body: bytes) -> None:
    if body.strip() in (b"", b"{}"):
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        raise ApiError(400, "MALFORMED_JSON", "body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "MALFORMED_JSON", "body must be a JSON object")


def _create_command(principal: Principal, body: bytes) -> CreatePayment:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "MALFORMED_JSON", f"body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "MALFORMED_JSON", "body must be a JSON object")
    try:
        req = CreatePaymentIn.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        code, field = _field_code(tuple(first["loc"]))
        raise ApiError(400, code, f"{field}: {first['msg']}", field) from None
    merchant = principal.merchant
    if req.channel is not None and req.channel not in merchant.methods:
        raise ApiError(
            400,
            "INVALID_CHANNEL",
            f"channel {req.channel} is not enabled for this merchant",
            "channel",
        )
    if req.channel is not None and req.amount.currency != "CNY":
        raise ApiError(400, "INVALID_CURRENCY", f"{req.channel} takes CNY only", "amount.currency")
    if req.method != "cashier" and req.channel is None:
        raise ApiError(400, "INVALID_CHANNEL", f"method {req.method} needs a channel", "channel")
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
    )
