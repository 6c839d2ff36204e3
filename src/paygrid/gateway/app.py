"""Channel callbacks over HTTP. Its own process (port 8002) in the production profile; mounted
on the merchant API's port in the embedded one."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from paygrid.kernel import context
from paygrid.ops.observability import Check, add_ops_routes
from paygrid.payments.service import PaymentService

MAX_CALLBACK_BYTES = 64 * 1024


def callback_router(payments: PaymentService) -> APIRouter:
    router = APIRouter()

    @router.post("/callbacks/{channel}", include_in_schema=False)
    async def channel_callback(channel: str, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_CALLBACK_BYTES:
            return Response(b'{"code":"FAIL","message":"too large"}', status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        context.request_id.set("cb_" + secrets.token_hex(10))  # events it emits carry it
        reply = await run_in_threadpool(payments.handle_callback, channel, headers, body)
        return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))

    return router


def create_gateway_app(payments: PaymentService, checks: Mapping[str, Check]) -> FastAPI:
    app = FastAPI(title="paygrid channel gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(callback_router(payments))
    add_ops_routes(app, checks)
    return app
