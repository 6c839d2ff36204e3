"""WeChat Pay sandbox app: API v3 under ``/v3``, payer and faults in ``/sandbox``.

Every ``/v3`` JSON answer (errors included) is signed by :class:`ProtocolMiddleware`, which also
bounds request bodies and injects API faults; the bill download stream is not signed, as on the
real API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygrid.channels.wechatpay.sandbox.faults import FaultConfig
from paygrid.channels.wechatpay.sandbox.protocol import ApiError
from paygrid.channels.wechatpay.sandbox.service import WechatPaySandbox
from paygrid.channels.wechatpay.sandbox.settings import SandboxSettings, SettingsError
from paygrid.channels.wechatpay.sandbox.store import Order
from paygrid.kernel.money import format_major
from paygrid.ops.http_limits import BodyLimit

MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_PORT = 8101

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


class ProtocolMiddleware:
    """On ``/v3``: faults, then a signed answer (应答签名). Bodies are bounded by the
    :class:`BodyLimit` around it."""

    def __init__(self, app: ASGIApp, sandbox: WechatPaySandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay = _replay(body, receive)
        if not scope["path"].startswith("/v3/"):
            await self.app(scope, replay, send)
            return
        await self._protocol(scope, replay, send)

    async def _protocol(self, scope: Scope, receive: Receive, send: Send) -> None:
        faults = self.sandbox.faults
        config = faults.config
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if faults.roll(config.error_rate):
            await _send_plain(send, 500, {"code": "SYSTEM_ERROR", "message": "系统错误"})
            return
        status, headers, body = await _capture(self.app, scope, receive)
        if not scope["path"].startswith("/v3/billdownload/"):
            serial = _header(scope, b"wechatpay-serial")
            signed = self.sandbox.sign_api_response(body, serial)
            headers += [(k.encode(), v.encode()) for k, v in signed.items()]
        headers.append((b"request-id", secrets.token_hex(16).encode()))
        if faults.roll(config.timeout_rate):  # processed, but the answer comes too late
            await asyncio.sleep(config.timeout_ms / 1000)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    """The whole body: at most MAX_BODY_BYTES, as ``receive`` is BodyLimit's."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body to the app once, then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, list[Any], bytes]:
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, collect)
    return int(start["status"]), list(start.get("headers", [])), b"".join(chunks)


async def _send_plain(send: Send, status: int, payload: object) -> None:
    body = _json_bytes(payload)
    headers = [(b"content-type", JSON_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _target(request: Request) -> str:
    """Path and query exactly as the client sent them: what the merchant signed."""
    raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
    query = request.scope.get("query_string", b"")
    target = bytes(raw).decode("latin-1")
    return f"{target}?{bytes(query).decode('latin-1')}" if query else target


async def _authenticated(sandbox: WechatPaySandbox, request: Request) -> tuple[str, bytes]:
    body = await request.body()
    auth = request.headers.get("authorization")
    return sandbox.authenticate(request.method, _target(request), auth, body), body


# --- app --------------------------------------------------------------------------------------


def create_app(data_dir: Path, public_base_url: str) -> FastAPI:
    """The sandbox app; credentials and state live under ``data_dir`` (created on first start)."""
    sandbox = WechatPaySandbox(data_dir, public_base_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.start()
        try:
            yield
        finally:
            sandbox.stop()

    app = FastAPI(title="paygrid WeChat Pay sandbox", lifespan=lifespan, docs_url=None)
    app.state.sandbox = sandbox
    app.add_middleware(ProtocolMiddleware, sandbox=sandbox)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, refusal=_too_large)  # outermost
    _add_error_handlers(app)
    _add_protocol_routes(app, sandbox)
    _add_sandbox_routes(app, sandbox)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return json_response(exc.status, exc.body())

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_REQUEST")
        return json_response(exc.status_code, {"code": code, "message": str(exc.detail)})

    async def settings_error(_: Request, exc: Exception) -> Response:
        return json_response(400, {"code": "PARAM_ERROR", "message": str(exc)})

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SettingsError, settings_error)


def _add_protocol_routes(app: FastAPI, sandbox: WechatPaySandbox) -> None:
    @app.post("/v3/pay/transactions/{kind}")
    async def create_order(kind: str, request: Request) -> Response:
        mchid, body = await _authenticated(sandbox, request)
        if kind not in ("native", "jsapi", "h5", "app"):
            raise ApiError(404, "NOT_FOUND", "接口不存在")
        return json_response(200, sandbox.create_order(kind, mchid, body))

    @app.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
    async def query_by_out_trade_no(out_trade_no: str, request: Request) -> Response:
        mchid, _ = await _authenticated(sandbox, request)
        mchid_param = request.query_params.get("mchid")
        return json_response(200, sandbox.query(mchid, mchid_param, out_trade_no=out_trade_no))

    @app.get("/v3/pay/transactions/id/{transaction_id}")
    async def query_by_id(transaction_id: str, request: Request) -> Response:
        mchid, _ = await _authenticated(sandbox, request)
        mchid_param = request.query_params.get("mchid")
        return json_response(200, sandbox.query(mchid, mchid_param, transaction_id=transaction_id))

    @app.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
    async def close(out_trade_no: str, request: Request) -> Response:
        mchid, body = await _authenticated(sandbox, request)
        sandbox.close(mchid, out_trade_no, body)
        return Response(status_code=204)

    @app.post("/v3/refund/domestic/refunds")
    async def create_refund(request: Request) -> Response:
        mchid, body = await _authenticated(sandbox, request)
        return json_response(200, sandbox.create_refund(mchid, body))

    @app.get("/v3/refund/domestic/refunds/{out_refund_no}")
    async def query_refund(out_refund_no: str, request: Request) -> Response:
        mchid, _ = await _authenticated(sandbox, request)
        return json_response(200, sandbox.query_refund(mchid, out_refund_no))

    @app.get("/v3/certificates")
    async def certificates(request: Request) -> Response:
        await _authenticated(sandbox, request)
        return json_response(200, sandbox.certificates())

    @app.get("/v3/bill/tradebill")
    async def trade_bill(request: Request) -> Response:
        mchid, _ = await _authenticated(sandbox, request)
        base = str(request.base_url).rstrip("/")  # where this client reaches us
        return json_response(200, sandbox.bills.trade_bill(mchid, request.query_params, base))

    @app.get("/v3/billdownload/file")
    async def bill_download(request: Request) -> Response:
        mchid, _ = await _authenticated(sandbox, request)
        content, gzipped = sandbox.bills.bill_file(mchid, request.query_params.get("token"))
        kind = "application/octet-stream" if gzipped else "text/plain; charset=utf-8"
        return Response(content, media_type=kind)


def _add_sandbox_routes(app: FastAPI, sandbox: WechatPaySandbox) -> None:
    @app.get("/sandbox/credentials")
    async def credentials() -> Response:
        return json_response(200, sandbox.creds.merchant_view())

    @app.get("/sandbox/health")
    async def health() -> Response:
        return json_response(200, {"status": "ok", "mchid": sandbox.creds.mchid})

    @app.post("/sandbox/pay")
    async def pay(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            result = sandbox.pay(_object_of(await request.body()))
            return json_response(200, result)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            result = sandbox.pay(form)
        except ApiError as exc:
            return _page(sandbox, None, exc.message, exc.status)
        return _page(sandbox, sandbox.find_order(form), result["transaction"]["trade_state_desc"])

    @app.get("/sandbox/pay")
    async def pay_page(request: Request) -> Response:
        return _order_page(sandbox, dict(request.query_params))

    @app.get("/sandbox/scan/{token}")
    async def scan_page(token: str) -> Response:
        return _order_page(sandbox, {"token": token})

    @app.get("/sandbox/orders")
    async def orders(limit: int = 100) -> Response:
        listed = sandbox.store.list_orders(max(1, min(limit, 1000)))
        return json_response(200, {"orders": [_order_view(o) for o in listed]})

    @app.get("/sandbox/refunds")
    async def refunds(limit: int = 100) -> Response:
        listed = sandbox.refunds.listed(max(1, min(limit, 1000)))
        return json_response(200, {"refunds": listed})

    @app.get("/sandbox/notifications")
    async def notifications(
        out_trade_no: str | None = None, out_refund_no: str | None = None, limit: int = 100
    ) -> Response:
        bounded = max(1, min(limit, 1000))
        listed = sandbox.store.list_notifications(out_trade_no, bounded, out_refund_no)
        rows = [
            {
                "notify_id": n.notify_id,
                "out_trade_no": n.out_trade_no,
                "out_refund_no": n.out_refund_no,
                "url": n.url,
                "probe": n.probe,
                "state": n.state,
                "attempts": n.attempts,
                "last_status": n.last_status,
                "last_error": n.last_error,
            }
            for n in listed
        ]
        return json_response(200, {"notifications": rows})

    @app.post("/sandbox/close-day")
    async def close_day(request: Request) -> Response:
        return json_response(200, sandbox.bills.close_day(_object_of(await request.body())))

    _add_knob_routes(app, sandbox)


def _add_knob_routes(app: FastAPI, sandbox: WechatPaySandbox) -> None:
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
        raise ApiError(400, "PARAM_ERROR", "请求体不是合法的 JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "PARAM_ERROR", "请求体必须是 JSON 对象")
    return data


def _order_view(order: Order) -> dict[str, Any]:
    return {
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_type": order.trade_type,
        "trade_state": order.trade_state,
        "total": order.total,
        "description": order.description,
        "transaction_id": order.transaction_id,
        "notify_url": order.notify_url,
        "time_expire": order.time_expire,
        "token": order.token,
    }


def _order_page(sandbox: WechatPaySandbox, query: Mapping[str, Any]) -> Response:
    try:
        order = sandbox.find_order(query)
    except ApiError as exc:
        return _page(sandbox, None, exc.message, exc.status)
    return _page(sandbox, order, None)


def _page(
    sandbox: WechatPaySandbox, order: Order | None, message: str | None, status: int = 200
) -> Response:
    """The page a payer lands on after scanning the QR (扫码支付页)."""
    html = _templates.get_template("pay.html").render(
        order=order,
        amount=format_major(order.total, order.currency) if order else None,
        payable=order is not None and order.trade_state in ("NOTPAY", "PAYERROR"),
        message=message,
        mchid=sandbox.creds.mchid,
    )
    return HTMLResponse(html, status_code=status)


# --- process ----------------------------------------------------------------------------------


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
        print(f"wechatpay sandbox listening on {base_url}", flush=True)

    asyncio.run(_serve(server, sock, ready))


async def _serve(server: uvicorn.Server, sock: socket.socket, ready: Callable[[], None]) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        ready()
    await task
