"""Channel callbacks over HTTP. Its own process (port 8002) in the production profile; mounted
on the merchant API's port in the embedded one."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from paygrid.kernel import context
from paygrid.ops.http_limits import BodyLimit
from paygrid.ops.observability import Check, add_health_routes
from paygrid.payments.service import PaymentService

log = logging.getLogger(__name__)
MAX_CALLBACK_BYTES = 64 * 1024


def _error(request: Request, status: int, code: str, message: str) -> JSONResponse:
    request_id = (
        getattr(request.state, "request_id", None)
        or context.request_id.get()
        or "cb_" + secrets.token_hex(10)
    )
    return JSONResponse(
        {"code": code, "message": message, "request_id": request_id},
        status_code=status,
        headers={"Request-Id": request_id},
    )


def callback_router(payments: PaymentService) -> APIRouter:
    router = APIRouter()

    @router.post("/callbacks/{channel}", include_in_schema=False)
    async def channel_callback(channel: str, request: Request) -> Response:
        # The body is at most MAX_CALLBACK_BYTES: the app's BodyLimit refused anything more.
        context.request_id.set("cb_" + secrets.token_hex(10))  # events it emits carry it
        if channel not in payments.channel_names:
            return _error(request, 404, "NOT_FOUND", "no such channel")
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = await run_in_threadpool(payments.handle_callback, channel, headers, body)
        return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))

    return router


def create_gateway_app(payments: PaymentService, checks: Mapping[str, Check]) -> FastAPI:
    app = FastAPI(title="paygrid channel gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=MAX_CALLBACK_BYTES)
    app.include_router(callback_router(payments))
    add_health_routes(app, checks)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Last resort; a channel retries a callback that got a 5xx."""
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return _error(request, 500, "INTERNAL_ERROR", "unexpected error")

    return app
