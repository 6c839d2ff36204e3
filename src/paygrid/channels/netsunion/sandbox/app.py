"""NetsUnion sandbox app: the platform's member gateway at ``/epcc/gateway`` (MODELLED path),
the clearing-file downloads, the banks' pay pages under ``/bank`` (``bankpage.py``), and the
bank, SMS, knob and fault sides under ``/sandbox``.

Every gateway answer is HTTP 200 with a signed message, errors included (SysRtnCd); only a
body over the limit gets 413.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.banks import BANK_IDS
from paygrid.channels.netsunion.credentials import DEFAULT_PORT, GATEWAY_PATH
from paygrid.channels.netsunion.sandbox import bankpage, clearing, pages
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox.faults import FaultConfig
from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox
from paygrid.channels.netsunion.sandbox.settings import SandboxSettings, SettingsError
from paygrid.channels.netsunion.sandbox.store import Agreement, Trade
from paygrid.ops.http_limits import BodyLimit

MAX_BODY_BYTES = wire.MAX_MESSAGE_BYTES
JSON_TYPE = "application/json;charset=utf-8"
MAX_LIST = 1000
# /sandbox/orders' trade_state and /sandbox/refunds' status: the TrxStatus words spelled out
STATES = {
    wire.BIZ_PROCESSING: "PROCESSING",
    wire.BIZ_SUCCESS: "SUCCESS",
    wire.BIZ_FAILED: "FAILED",
    wire.TRX_CLOSED: "CLOSED",  # a gateway order closed or expired unpaid
}
METHODS = {p.DEBIT_KIND: "agreement", p.PAGE_KIND: "page"}


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(status: int, payload: object) -> Response:
    return Response(_json_bytes(payload), status_code=status, media_type=JSON_TYPE)


def _too_large(_: Scope, limit: int) -> bytes:
    return _json_bytes({"code": "PARAM_ERROR", "message": f"请求体过大（上限 {limit} 字节）"})


def create_app(data_dir: Path, public_base_url: str) -> FastAPI:
    sandbox = NetsUnionSandbox(data_dir, public_base_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.start()
        try:
            yield
        finally:
            sandbox.stop()

    app = FastAPI(title="paygrid NetsUnion sandbox", lifespan=lifespan, docs_url=None)
    app.state.sandbox = sandbox
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, refusal=_too_large)
    _add_error_handlers(app)
    _add_gateway_routes(app, sandbox)
    _add_sandbox_routes(app, sandbox)
    _add_knob_routes(app, sandbox)
    bankpage.add_routes(app, sandbox)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def sandbox_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, p.SandboxError)
        return json_response(exc.status, {"code": exc.code, "message": exc.message})

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_REQUEST")
        return json_response(exc.status_code, {"code": code, "message": str(exc.detail)})

    async def settings_error(_: Request, exc: Exception) -> Response:
        return json_response(400, {"code": "PARAM_ERROR", "message": str(exc)})

    app.add_exception_handler(p.SandboxError, sandbox_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SettingsError, settings_error)


# --- the gateway --------------------------------------------------------------------------------


def _add_gateway_routes(app: FastAPI, sandbox: NetsUnionSandbox) -> None:
    @app.post(GATEWAY_PATH)
    async def gateway(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k in ("msgtp", "oriissrid")}
        try:
            message = await asyncio.to_thread(sandbox.read, body, headers)
        except p.SystemRefusal as refusal:
            msg_tp = wire.ANSWERS.get(request.headers.get("msgtp", ""), wire.ERROR_ANSWER)
            return _xml(await asyncio.to_thread(sandbox.refusal, msg_tp, refusal))
        return await _processed(sandbox, message)

    @app.get(clearing.FILES_PATH + "/{token}")
    async def file_download(token: str) -> Response:
        found = sandbox.store.load_file(token, time.time())
        if found is None:
            raise p.SandboxError(404, "FILE_EXPIRED", "下载地址无效或已过期")
        name, content = found
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(content, media_type="text/csv; charset=utf-8", headers=headers)


async def _processed(sandbox: NetsUnionSandbox, message: wire.Message) -> Response:
    """The faults of the message's bank, then the answer."""
    faults, config = sandbox.faults, sandbox.faults.config
    bank = await asyncio.to_thread(sandbox.bank_of, message)
    if config.latency_ms and config.hits(bank):
        await asyncio.sleep(config.latency_ms / 1000)
    if faults.roll(config.error_rate, bank):
        busy = p.SystemRefusal(wire.SYS_BUSY, "系统繁忙，请稍后重试")
        answer = wire.ANSWERS[message.msg_tp]
        return _xml(await asyncio.to_thread(sandbox.refusal, answer, busy))
    data = await asyncio.to_thread(sandbox.dispatch, message)
    if faults.roll(config.timeout_rate, bank):  # processed, but the answer comes too late
        await asyncio.sleep(config.timeout_ms / 1000)
    return _xml(data)


def _xml(data: bytes) -> Response:
    return Response(data, status_code=200, media_type=wire.CONTENT_TYPE)


# --- the sandbox side ---------------------------------------------------------------------------


def _limit(limit: int) -> int:
    return max(1, min(limit, MAX_LIST))


def _add_sandbox_routes(app: FastAPI, sandbox: NetsUnionSandbox) -> None:
    @app.get("/sandbox/credentials")
    async def credentials() -> Response:
        return json_response(200, sandbox.merchant_credentials())

    @app.get("/sandbox/health")
    async def health() -> Response:
        return json_response(200, {"status": "ok", "member_id": sandbox.member_id})

    @app.get("/sandbox/banks")
    async def banks() -> Response:
        return json_response(200, {"banks": dict(BANK_IDS)})

    @app.post("/sandbox/pay")
    async def pay(request: Request) -> Response:
        payload = _object_of(await request.body())
        trade = await asyncio.to_thread(pages.pay, sandbox, payload, time.time())
        return json_response(
            200, {"order": _order_view(trade), "return_url": pages.return_url(trade)}
        )

    @app.get("/sandbox/sms")
    async def sms(mobile: str | None = None, limit: int = 20) -> Response:
        """The SMS the banks "sent" (outside the protocol): for tests and people."""
        return json_response(200, {"sms": sandbox.store.list_sms(mobile, _limit(limit))})

    @app.get("/sandbox/agreements")
    async def agreements(limit: int = 100) -> Response:
        listed = sandbox.store.list_agreements(_limit(limit))
        return json_response(200, {"agreements": [_agreement_view(a) for a in listed]})

    @app.get("/sandbox/orders")
    async def orders(limit: int = 100) -> Response:
        listed = sandbox.store.list_trades(p.PAYMENT_KINDS, _limit(limit))
        views = [{**_order_view(t), **_page_view(sandbox, t)} for t in listed]
        return json_response(200, {"orders": views})

    @app.get("/sandbox/refunds")
    async def refunds(limit: int = 100) -> Response:
        listed = sandbox.store.list_trades((p.REFUND_KIND,), _limit(limit))
        views = [
            {"out_refund_no": r.trx_id, "out_trade_no": r.ori_trx_id, "amount": r.amount,
             "status": STATES[r.status], "sys_trx_id": r.sys_trx_id, "batch_id": r.batch_id}
            for r in listed
        ]  # fmt: skip
        return json_response(200, {"refunds": views})

    @app.get("/sandbox/notifications")
    async def notifications(out_trade_no: str | None = None, limit: int = 100) -> Response:
        listed = sandbox.store.list_notifications(out_trade_no, _limit(limit))
        rows = [
            {k: v for k, v in dataclasses.asdict(n).items() if k not in ("id", "body")}
            for n in listed
        ]
        return json_response(200, {"notifications": rows})

    @app.post("/sandbox/close-day")
    async def close_day(request: Request) -> Response:
        payload = _object_of(await request.body())
        result = await asyncio.to_thread(
            clearing.close_day, sandbox, payload.get("date"), time.time()
        )
        return json_response(200, result)


def _order_view(trade: Trade) -> dict[str, Any]:
    return {
        "out_trade_no": trade.trx_id,
        "method": METHODS[trade.kind],
        "trade_state": STATES[trade.status],
        "total": trade.amount,
        "refunded": trade.refunded,
        "bank_id": trade.bank_id,
        "agreement_no": trade.sgn_no or None,
        "sys_trx_id": trade.sys_trx_id,
        "failure": trade.failure or None,
        "notify_url": trade.notify_url,
        "batch_id": trade.batch_id or None,
        "created_at": p.beijing(trade.created_at),
        "finished_at": p.beijing(trade.finished_at),
    }


def _page_view(sandbox: NetsUnionSandbox, trade: Trade) -> dict[str, Any]:
    """A gateway order's page: where a person opens it (GET with the token) and until when."""
    if trade.kind != p.PAGE_KIND:
        return {}
    return {
        "page_url": f"{pages.page_url(sandbox, trade.bank_id)}?Tkn={trade.token}",
        "expires_at": p.beijing(trade.expires_at),
        "return_url": trade.return_url or None,
    }


def _agreement_view(agreement: Agreement) -> dict[str, Any]:
    return {
        "trx_id": agreement.trx_id,
        "state": agreement.state,
        "agreement_no": agreement.sgn_no,
        "bank_id": agreement.bank_id,
        "account": p.masked(agreement.account_no),
        "mobile": agreement.mobile,
        "failure": agreement.failure or None,
        "created_at": p.beijing(agreement.created_at),
    }


# --- knobs --------------------------------------------------------------------------------------


def _add_knob_routes(app: FastAPI, sandbox: NetsUnionSandbox) -> None:
    def view(value: FaultConfig | SandboxSettings) -> dict[str, Any]:
        return dataclasses.asdict(value)

    @app.get("/sandbox/faults")
    async def get_faults() -> Response:
        return json_response(200, view(sandbox.faults.config))

    @app.post("/sandbox/faults")
    async def set_faults(request: Request) -> Response:
        return json_response(200, view(sandbox.update_faults(_object_of(await request.body()))))

    @app.delete("/sandbox/faults")
    async def reset_faults() -> Response:
        return json_response(200, view(sandbox.update_faults(None)))

    @app.get("/sandbox/settings")
    async def get_settings() -> Response:
        return json_response(200, view(sandbox.settings))

    @app.post("/sandbox/settings")
    async def set_settings(request: Request) -> Response:
        return json_response(200, view(sandbox.update_settings(_object_of(await request.body()))))


def _object_of(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise p.SandboxError(400, "PARAM_ERROR", "请求体不是合法的 JSON") from exc
    if not isinstance(data, dict):
        raise p.SandboxError(400, "PARAM_ERROR", "请求体必须是 JSON 对象")
    return data


# --- process ------------------------------------------------------------------------------------


def run(data_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the sandbox; print one ready line once it accepts connections (port 0: any free)."""
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    base_url = f"http://{host}:{bound_port}"
    app = create_app(data_dir, base_url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def ready() -> None:
        print(f"netsunion sandbox listening on {base_url}", flush=True)

    asyncio.run(_serve(server, sock, ready))


async def _serve(server: uvicorn.Server, sock: socket.socket, ready: Callable[[], None]) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        ready()
    await task
