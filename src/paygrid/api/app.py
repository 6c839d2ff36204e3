"""The merchant API as a FastAPI app: the middleware (body limit, request id, metrics), the
error handlers, the OpenAPI document and one router per resource (``api/routes/``). Handlers
are thin: authenticate, validate, call the payment core in a worker thread, shape the
response. The channel callback endpoint (the gateway's inbound side) is mounted here too in
the embedded profile."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygrid.api import openapi as doc
from paygrid.api.deps import ApiDeps
from paygrid.api.errors import ApiError
from paygrid.api.routes import agreements, bills, notifications, payments, refunds, reports
from paygrid.gateway.app import callback_router
from paygrid.ops.http_limits import BodyLimit
from paygrid.ops.observability import add_health_routes, observe_request, request_id_var
from paygrid.storage.database import DatabaseUnavailable

__all__ = ["ApiDeps", "create_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# One router per resource, in the order of the OpenAPI document.
ROUTERS: tuple[Callable[[ApiDeps], APIRouter], ...] = (
    payments.router,
    refunds.router,
    agreements.router,
    bills.router,
    reports.router,
    notifications.router,
)


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
    _install_middleware(app)
    _install_error_handlers(app)
    # --- health: /healthz, /readyz (metrics are on the operations port, not here) --------
    add_health_routes(app, {"database": deps.db.ping})
    for router in ROUTERS:
        app.include_router(router(deps))
    # --- channel callbacks (回调), the gateway's inbound side, on this port when embedded --
    app.include_router(callback_router(deps.payments))
    return app


def _install_middleware(app: FastAPI) -> None:
    # Added before the request-id middleware, so it runs inside it: a 413 carries the id too.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    app.add_middleware(RequestIdMiddleware)


class RequestIdMiddleware:
    """Gives each request its id (``Request-Id`` header, logs, error bodies) and counts it in
    /metrics. Plain ASGI, not ``@app.middleware``: Starlette's BaseHTTPMiddleware runs the
    app in a task group with memory streams, a cost on every request of the money path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(10)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (b"request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                kept = [h for h in message.get("headers", []) if h[0].lower() != b"request-id"]
                message = {**message, "headers": [*kept, header]}  # set, never doubled
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except DatabaseUnavailable:
            response = _error_response(
                Request(scope),
                503,
                "DATABASE_UNAVAILABLE",
                "the database is unavailable; retry later",
            )
            await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            observe_request("api", scope["method"], path, status, started)


def _install_error_handlers(app: FastAPI) -> None:
    """Every refusal is the documented error body, whatever raised it."""

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
