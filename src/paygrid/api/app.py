"""The merchant API as a FastAPI app. Handlers are thin: authenticate, validate, call the
payment core in a worker thread, shape the response. The channel callback endpoint (the
gateway's inbound side) is mounted here too in the embedded profile."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from paygrid.api import idempotency
from paygrid.api import openapi as doc
from paygrid.api.auth import Principal, authenticate
from paygrid.api.errors import PAYMENT_CODE_STATUS, ApiError
from paygrid.api.schemas import CreatePaymentIn
from paygrid.gateway.app import callback_router
from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE, business_date, utcnow
from paygrid.kernel.ids import is_id
from paygrid.merchants.vault import Vault
from paygrid.notify.service import NotificationNotFound, NotifyService
from paygrid.notify.url_policy import UrlRefused
from paygrid.ops.http_limits import BodyLimit
from paygrid.ops.observability import add_health_routes, observe_request, request_id_var
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
FIRST_BILL_DATE = date(2000, 1, 1)  # no bill before; also keeps day arithmetic in range
_BILL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_OUT_TRADE_NO = re.compile(r"[A-Za-z0-9_\-|*.:]{1,64}", re.ASCII)  # as in CreatePaymentIn


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
        "amounts are integers of minor units (fen). Every refusal is a 4xx or 5xx with the "
        "error body {code, message, request_id}.",
        redirect_slashes=False,
    )
    doc.install(app)

    # Added before the request-id middleware, so it runs inside it: a 413 carries the id too.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Last resort: no input may get here, but if one does, the answer is still the
        documented error body (the traceback goes to the log, never to the client)."""
        request_id = getattr(request.state, "request_id", "")
        log.error("unexpected error %s on %s", request_id, request.url.path, exc_info=exc)
        response = _error_response(
            request, 500, "INTERNAL_ERROR", "unexpected error; quote the request id to support"
        )
        response.headers["Request-Id"] = request_id
        return response

    async def call(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await run_in_threadpool(fn, *args)
        except PaymentRejected as exc:
            raise ApiError(PAYMENT_CODE_STATUS.get(exc.code, 400), exc.code, exc.message) from None

    async def signed(request: Request) -> tuple[Principal, bytes]:
        body = await request.body()  # at most MAX_BODY_BYTES: BodyLimit refused anything more
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

    # --- health: /healthz, /readyz (metrics are on the operations port, not here) --------
    add_health_routes(app, {"database": deps.db.ping})

    # --- payments -------------------------------------------------------------------------
    @app.post(
        "/v1/payments",
        status_code=201,
        tags=["payments"],
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
            cmd = _create_command(principal, body, deps.payments.currencies)
            _check_notify_url(deps.notify, cmd.notify_url)
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

    @app.get(
        "/v1/payments/{payment_id}",
        tags=["payments"],
        operation_id="getPayment",
        summary="Get a payment",
        response_model=None,
        responses=doc.responses({200: (doc.Payment, "The payment.")}, (404,)),
        openapi_extra=doc.operation(doc.PAYMENT_ID),
    )
    async def get_payment(payment_id: str, request: Request) -> dict[str, Any]:
        principal, _ = await signed(request)
        _require_payment_id(payment_id)
        payment = await call(deps.payments.get, payment_id, principal.merchant.mchid)
        return payment_json(payment)

    @app.get(
        "/v1/payments",
        tags=["payments"],
        operation_id="findPayment",
        summary="Find a payment by out_trade_no",
        response_model=None,
        responses=doc.responses({200: (doc.Payment, "The payment.")}, (404,)),
        openapi_extra=doc.operation(doc.OUT_TRADE_NO),
    )
    async def find_payment(request: Request) -> dict[str, Any]:
        principal, _ = await signed(request)
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
        return payment_json(payment)

    @app.post(
        "/v1/payments/{payment_id}/close",
        tags=["payments"],
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
        principal, body = await signed(request)
        _require_empty_object(body)
        _require_payment_id(payment_id)
        key = request.headers.get("idempotency-key")
        mchid = principal.merchant.mchid
        if key is not None:
            path = f"/v1/payments/{payment_id}/close"
            replay = await call(
                idempotency.begin, deps.db, mchid, key, idempotency.request_hash("POST", path, body)
            )
            if replay is not None:
                return Response(
                    replay.body,
                    status_code=replay.status,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
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
    @app.get(
        "/v1/bills/{bill_date}",
        tags=["bills"],
        operation_id="getBill",
        summary="The merchant's daily bill (CSV)",
        response_class=Response,
        responses=doc.csv_responses(
            "The payments that succeeded on that business date, one CSV row each (columns in "
            "docs/merchant-api.md; amounts in fen).",
            {
                "Content-Disposition": {
                    "description": "attachment; filename=paygrid-bill-<mchid>-<date>.csv",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "Paygrid-Bill-Complete": {
                    "description": "false while the business day is still running.",
                    "required": True,
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
            },
        ),
        openapi_extra=doc.operation(doc.BILL_DATE),
    )
    async def merchant_bill(bill_date: str, request: Request) -> Response:
        principal, _ = await signed(request)
        day = _bill_day(bill_date)
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
    @app.get(
        "/v1/notifications",
        tags=["notifications"],
        operation_id="listNotifications",
        summary="List notifications and their delivery attempts",
        response_model=None,
        responses=doc.responses(
            {200: (doc.NotificationList, "The notifications, oldest first (at most 200).")},
            links=doc.NOTIFICATION_LINKS,
        ),
        openapi_extra=doc.operation(doc.PAYMENT_FILTER),
    )
    async def list_notifications(request: Request) -> dict[str, Any]:
        principal, _ = await signed(request)
        payment_id = request.query_params.get("payment_id")
        if payment_id is not None and not is_id(payment_id, "pay"):
            raise ApiError(
                400, "INVALID_PAYMENT_ID", "payment_id is not a payment id", "payment_id"
            )
        items = await call(deps.notify.list_for, principal.merchant.mchid, payment_id)
        return {"data": items}

    @app.post(
        "/v1/notifications/{notify_id}/resend",
        tags=["notifications"],
        operation_id="resendNotification",
        summary="Deliver a notification again, now",
        response_model=None,
        responses=doc.responses(
            {200: (doc.Notification, "The notification, with this attempt.")}, (404,)
        ),
        openapi_extra=doc.operation(doc.NOTIFY_ID, body=doc.EMPTY_BODY),
    )
    async def resend_notification(notify_id: str, request: Request) -> dict[str, Any]:
        principal, body = await signed(request)
        _require_empty_object(body)
        try:
            if not is_id(notify_id, "ntf"):
                raise NotificationNotFound(notify_id)
            return await call(deps.notify.resend, notify_id, principal.merchant.mchid)
        except NotificationNotFound:
            raise ApiError(404, "NOTIFICATION_NOT_FOUND", f"no notification {notify_id}") from None

    # --- channel callbacks (回调), the gateway's inbound side, on this port when embedded --
    app.include_router(callback_router(deps.payments))

    return app


def _check_notify_url(notify: NotifyService, url: str) -> None:
    """SSRF guard (notify/url_policy.py): no internal, credential-bearing or obfuscated URL."""
    try:
        notify.check_url(url)
    except UrlRefused as exc:
        raise ApiError(400, "INVALID_NOTIFY_URL", exc.message, "notify_url") from None


def _require_payment_id(payment_id: str) -> None:
    """A path that cannot name a payment is not looked up (nor are its bytes sent to SQL)."""
    if not is_id(payment_id, "pay"):
        raise ApiError(404, "PAYMENT_NOT_FOUND", "no such payment")


def _bill_day(text: str) -> date:
    if not _BILL_DATE.fullmatch(text):
        raise ApiError(400, "INVALID_BILL_DATE", "bill date must be yyyy-mm-dd", "bill_date")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "INVALID_BILL_DATE", "no such date", "bill_date") from None
    if day < FIRST_BILL_DATE:
        raise ApiError(
            400, "INVALID_BILL_DATE", f"no bills before {FIRST_BILL_DATE.isoformat()}", "bill_date"
        )
    return day


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else (including nesting deeper than the parser
    recurses) is 400 MALFORMED_JSON."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "MALFORMED_JSON", f"body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "MALFORMED_JSON", "body must be a JSON object")
    return parsed


def _require_empty_object(body: bytes) -> None:
    if body.strip() in (b"", b"{}"):
        return
    _json_object(body)


def _create_command(
    principal: Principal, body: bytes, currencies: Callable[[Iterable[str]], frozenset[str]]
) -> CreatePayment:
    _json_object(body)
    try:
        req = CreatePaymentIn.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":  # e.g. nested too deep, or a lone surrogate
            raise ApiError(400, "MALFORMED_JSON", first["msg"]) from None
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
    channels = merchant.methods if req.channel is None else (req.channel,)
    if req.amount.currency not in currencies(channels):
        raise ApiError(
            400,
            "UNSUPPORTED_CURRENCY",
            f"{req.amount.currency} is not taken by {' or '.join(channels) or 'any channel'}",
            "amount.currency",
        )
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
