"""Alipay sandbox app: the gateway at ``/gateway.do``, the bill download, and the payer side,
knobs and fault injection under ``/sandbox``.

Every gateway answer is HTTP 200 with a signed node, errors included, as Alipay answers (its SDKs
raise on any other status); only a body over the limit gets 413. Page/wap pay requests come from
the payer's browser and are answered with the sandbox cashier page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jinja2
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from paygrid.channels.alipay.credentials import DEFAULT_PORT
from paygrid.channels.alipay.sandbox import bills, payer
from paygrid.channels.alipay.sandbox import protocol as p
from paygrid.channels.alipay.sandbox.faults import FaultConfig
from paygrid.channels.alipay.sandbox.service import AlipaySandbox
from paygrid.channels.alipay.sandbox.settings import SandboxSettings, SettingsError
from paygrid.channels.alipay.sandbox.store import Trade
from paygrid.kernel.money import format_major
from paygrid.ops.http_limits import BodyLimit

MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json;charset=utf-8"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(status: int, payload: object) -> Response:
    return Response(_json_bytes(payload), status_code=status, media_type=JSON_TYPE)


def _too_large(_: Scope, limit: int) -> bytes:
    return _json_bytes({"code": "PARAM_ERROR", "message": f"请求体过大（上限 {limit} 字节）"})


def create_app(data_dir: Path, public_base_url: str) -> FastAPI:
    """The sandbox app; credentials and state live under ``data_dir`` (created on first start)."""
    sandbox = AlipaySandbox(data_dir, public_base_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.start()
        try:
            yield
        finally:
            sandbox.stop()

    app = FastAPI(title="paygrid Alipay sandbox", lifespan=lifespan, docs_url=None)
    app.state.sandbox = sandbox
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, refusal=_too_large)
    _add_error_handlers(app)
    _add_gateway_routes(app, sandbox)
    _add_payer_routes(app, sandbox)
    _add_knob_routes(app, sandbox)
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


def _add_gateway_routes(app: FastAPI, sandbox: AlipaySandbox) -> None:
    @app.api_route("/gateway.do", methods=["GET", "POST"])
    async def gateway(request: Request) -> Response:
        body = await request.body()
        try:
            params = p.decode_params(request.scope.get("query_string", b""), body)
        except p.GatewayError as exc:
            return _answer(sandbox.signed(None, exc.node()))
        if params.get("method") in p.BROWSER_METHODS:
            return _browser_pay(sandbox, params)
        return await _server_api(sandbox, params, str(request.base_url))

    @app.get(bills.DOWNLOAD_PATH)
    async def bill_download(request: Request) -> Response:
        found = sandbox.store.load_bill(request.query_params.get("fileId", ""), time.time())
        if found is None:
            raise p.SandboxError(404, "BILL_FILE_EXPIRED", "下载地址无效或已过期")
        name, content = found
        disposition = f'attachment; filename="{name}"'
        return Response(
            content,
            media_type="application/oct-stream",
            headers={"Content-Disposition": disposition},
        )


def _answer(text: str) -> Response:
    return Response(text.encode("utf-8"), status_code=200, media_type=JSON_TYPE)


async def _server_api(sandbox: AlipaySandbox, params: Mapping[str, str], base: str) -> Response:
    faults = sandbox.faults
    config = faults.config
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    if faults.roll(config.error_rate):
        return _answer(sandbox.signed(params.get("method"), p.UNAVAILABLE.node()))
    text = await asyncio.to_thread(sandbox.api, params, base.rstrip("/"))
    if faults.roll(config.timeout_rate):  # processed, but the answer comes too late
        await asyncio.sleep(config.timeout_ms / 1000)
    return _answer(text)


def _browser_pay(sandbox: AlipaySandbox, params: Mapping[str, str]) -> Response:
    """The browser arrives with a signed page/wap pay request: on to the cashier page."""
    try:
        trade = sandbox.browser_order(params)
    except p.GatewayError as exc:
        return _page(sandbox, None, f"{exc.sub_code}: {exc.sub_msg}", error=exc.sub_code)
    return RedirectResponse(f"/sandbox/cashier/{trade.token}", status_code=302)


# --- the payer ----------------------------------------------------------------------------------


def _add_payer_routes(app: FastAPI, sandbox: AlipaySandbox) -> None:
    @app.get("/sandbox/credentials")
    async def credentials() -> Response:
        return json_response(200, sandbox.merchant_credentials())

    @app.get("/sandbox/health")
    async def health() -> Response:
        return json_response(200, {"status": "ok", "app_id": sandbox.creds.app_id})

    @app.post("/sandbox/pay")
    async def pay(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            return json_response(200, payer.pay(sandbox, _object_of(await request.body())))
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            result = payer.pay(sandbox, form)
        except p.SandboxError as exc:
            return _page(sandbox, None, exc.message, exc.status)
        if result["return_url"]:
            return RedirectResponse(result["return_url"], status_code=303)
        trade = payer.find_trade(sandbox, form)
        failed = form.get("outcome") == "FAIL" and trade.status == "WAIT_BUYER_PAY"
        return _page(sandbox, trade, "支付失败（余额不足），可重试" if failed else "支付成功")

    @app.get("/sandbox/qr/{token}")
    async def scan(token: str) -> Response:
        return _opened_page(sandbox, token)

    @app.get("/sandbox/cashier/{token}")
    async def cashier(token: str) -> Response:
        return _opened_page(sandbox, token)

    @app.get("/sandbox/trades")
    async def trades(limit: int = 100) -> Response:
        listed = sandbox.store.list_trades(max(1, min(limit, 1000)))
        return json_response(200, {"trades": [_trade_view(t) for t in listed]})

    @app.get("/sandbox/orders")
    async def orders(limit: int = 100) -> Response:
        listed = sandbox.store.list_trades(max(1, min(limit, 1000)))
        return json_response(200, {"orders": [_order_view(t) for t in listed]})

    @app.get("/sandbox/refunds")
    async def refunds(limit: int = 100) -> Response:
        """Every refund, newest first, as every channel's sandbox lists them: named by its
        ``out_request_no``; Alipay's refunds are done when answered (``REFUND_SUCCESS``)."""
        listed = sandbox.store.list_refunds(max(1, min(limit, 1000)))
        views = [
            {
                "out_refund_no": r.out_request_no,
                "out_trade_no": r.out_trade_no,
                "amount": r.amount,
                "status": REFUND_SUCCESS,
            }
            for r in listed
        ]
        return json_response(200, {"refunds": views})

    @app.get("/sandbox/notifications")
    async def notifications(out_trade_no: str | None = None, limit: int = 100) -> Response:
        listed = sandbox.store.list_notifications(out_trade_no, max(1, min(limit, 1000)))
        rows = [
            {k: v for k, v in dataclasses.asdict(n).items() if k not in ("id", "body")}
            for n in listed
        ]
        return json_response(200, {"notifications": rows})

    @app.post("/sandbox/close-day")
    async def close_day(request: Request) -> Response:
        payload = _object_of(await request.body())
        return json_response(200, bills.close_day(sandbox, payload.get("date"), time.time()))


def _opened_page(sandbox: AlipaySandbox, token: str) -> Response:
    try:
        trade = payer.open_trade(sandbox, {"token": token})
    except p.SandboxError as exc:
        return _page(sandbox, None, exc.message, exc.status)
    return _page(sandbox, trade, None)


def _trade_view(trade: Trade) -> dict[str, Any]:
    view = dataclasses.asdict(trade)
    view.pop("request_digest")
    return view


# /sandbox/orders' trade_state: the sandbox's own word, so a drill or a test tells paid from
# unpaid without a query. Alipay's TRADE_CLOSED is split: REFUNDED when it was paid (and then
# refunded in full), TRADE_CLOSED when it never was; UNSCANNED and EXPIRED are QR codes or
# page pay requests the payer never opened (no trade at Alipay yet).
REFUNDED = "REFUNDED"
REFUND_SUCCESS = "REFUND_SUCCESS"  # /sandbox/refunds' status: the refund query's word


def _order_view(trade: Trade) -> dict[str, Any]:
    """A trade as the channel-neutral ``/sandbox/orders`` lists it (as WeChat Pay's does)."""
    refunded = trade.status == "TRADE_CLOSED" and trade.paid_at is not None
    return {
        "app_id": trade.app_id,
        "out_trade_no": trade.out_trade_no,
        "kind": trade.kind,
        "trade_state": REFUNDED if refunded else trade.status,
        "trade_status": trade.status if trade.status in p.VISIBLE else None,
        "total": trade.total,
        "refunded": trade.refunded,
        "subject": trade.subject,
        "trade_no": trade.trade_no,
        "notify_url": trade.notify_url,
        "expire_at": trade.expire_at,
        "paid_at": trade.paid_at,
        "token": trade.token,
    }


def _page(
    sandbox: AlipaySandbox,
    trade: Trade | None,
    message: str | None,
    status: int = 200,
    error: str | None = None,
) -> Response:
    """The payer's page: the scanned QR or the cashier (收银台), with Pay / Fail buttons."""
    html = _templates.get_template("pay.html").render(
        trade=trade,
        amount=format_major(trade.total, "CNY") if trade else None,
        payable=trade is not None and trade.status == "WAIT_BUYER_PAY",
        message=message,
        error=error,
        seller_id=sandbox.creds.seller_id,
        return_url=trade.return_url if trade and trade.kind != "precreate" else None,
    )
    return HTMLResponse(html, status_code=status)


# --- knobs --------------------------------------------------------------------------------------


def _add_knob_routes(app: FastAPI, sandbox: AlipaySandbox) -> None:
    def view(value: FaultConfig | SandboxSettings) -> dict[str, Any]:
        return dataclasses.asdict(value)

    @app.get("/sandbox/faults")
    async def get_faults() -> Response:
        return json_response(200, view(sandbox.faults.config))

    @app.post("/sandbox/faults")
    async def set_faults(request: Request) -> Response:
        changes = _object_of(await request.body())
        return json_response(200, view(sandbox.update_faults(changes)))

    @app.delete("/sandbox/faults")
    async def reset_faults() -> Response:
        return json_response(200, view(sandbox.update_faults(None)))

    @app.get("/sandbox/settings")
    async def get_settings() -> Response:
        return json_response(200, view(sandbox.settings))

    @app.post("/sandbox/settings")
    async def set_settings(request: Request) -> Response:
        changes = _object_of(await request.body())
        return json_response(200, view(sandbox.update_settings(changes)))


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
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP; without it every answer waits ~40 ms on Nagle + delayed ACK.
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
        print(f"alipay sandbox listening on {base_url}", flush=True)

    asyncio.run(_serve(server, sock, ready))


async def _serve(server: uvicorn.Server, sock: socket.socket, ready: Callable[[], None]) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        ready()
    await task
