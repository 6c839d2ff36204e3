"""UnionPay sandbox app: the gateway's real paths (front, back, query, file transfer), and the
payer side, knobs and fault injection under ``/sandbox``.

Back-end answers are HTTP 200 with a signed ``k=v`` body, errors included, as the gateway
answers; a front consume comes from the payer's browser and is answered with the pay page.
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

from paygrid.channels.unionpay import pki
from paygrid.channels.unionpay.credentials import (
    BACK_PATH,
    DEFAULT_PORT,
    FILE_PATH,
    FRONT_PATH,
    PFX_PASSWORD,
    QUERY_PATH,
)
from paygrid.channels.unionpay.parsing import ref_of
from paygrid.channels.unionpay.sandbox import bills, payer
from paygrid.channels.unionpay.sandbox import protocol as p
from paygrid.channels.unionpay.sandbox.faults import FaultConfig
from paygrid.channels.unionpay.sandbox.service import UnionPaySandbox
from paygrid.channels.unionpay.sandbox.settings import SandboxSettings, SettingsError
from paygrid.channels.unionpay.sandbox.store import Consume
from paygrid.channels.unionpay.signing import load_cert, load_private_key
from paygrid.kernel.money import format_major
from paygrid.ops.http_limits import BodyLimit

MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json;charset=utf-8"
KV_TYPE = "text/plain;charset=UTF-8"
BACK_KINDS = {BACK_PATH: "back", QUERY_PATH: "query", FILE_PATH: "file"}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
)


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(status: int, payload: object) -> Response:
    return Response(_json_bytes(payload), status_code=status, media_type=JSON_TYPE)


def _too_large(_: Scope, limit: int) -> bytes:
    return _json_bytes({"code": "PARAM_ERROR", "message": f"请求体过大（上限 {limit} 字节）"})


def create_app(data_dir: Path, public_base_url: str) -> FastAPI:
    """The sandbox app; credentials and state live under ``data_dir`` (created on first start)."""
    sandbox = UnionPaySandbox(data_dir, public_base_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.start()
        try:
            yield
        finally:
            sandbox.stop()

    app = FastAPI(title="paygrid UnionPay sandbox", lifespan=lifespan, docs_url=None)
    app.state.sandbox = sandbox
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, refusal=_too_large)
    _add_error_handlers(app)
    _add_gateway_routes(app, sandbox)
    _add_payer_routes(app, sandbox)
    _add_listing_routes(app, sandbox)
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


def _add_gateway_routes(app: FastAPI, sandbox: UnionPaySandbox) -> None:
    @app.post(FRONT_PATH)
    async def front(request: Request) -> Response:
        """The payer's browser posts the signed front consume: on to the pay page."""
        try:
            form = p.read_form(await request.body())
        except p.AcpError as exc:
            return _page(sandbox, None, exc.message, 400, exc.code)
        try:
            consume = await asyncio.to_thread(payer.front, sandbox, form)
        except p.SandboxError as exc:
            return _page(sandbox, None, exc.message, 400, exc.code)
        return RedirectResponse(f"/sandbox/cashier/{consume.token}", status_code=303)

    for path, kind in BACK_KINDS.items():
        app.add_api_route(path, _back_route(sandbox, kind), methods=["POST"])


def _back_route(sandbox: UnionPaySandbox, kind: str) -> Callable[[Request], Any]:
    async def route(request: Request) -> Response:
        try:
            form = p.read_form(await request.body())
        except p.AcpError as exc:
            return _kv(sandbox.answer_text(p.answer({}, exc.code, exc.message)))
        faults = sandbox.faults
        config = faults.config
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if faults.roll(config.error_rate):  # busy: not processed
            return _kv(sandbox.answer_text(p.answer(form, "06")))
        text = await asyncio.to_thread(sandbox.handle, kind, form)
        if kind != "file" and faults.roll(config.pending_rate):  # done, but "query later"
            code = p.PENDING_CODES[faults.randint(0, len(p.PENDING_CODES) - 1)]
            text = sandbox.answer_text(p.answer(form, code))
        if faults.roll(config.timeout_rate):  # processed, but the answer comes too late
            await asyncio.sleep(config.timeout_ms / 1000)
        return _kv(text)

    return route


def _kv(text: str) -> Response:
    return Response(text.encode("utf-8"), status_code=200, media_type=KV_TYPE)


# --- the payer ----------------------------------------------------------------------------------


def _add_payer_routes(app: FastAPI, sandbox: UnionPaySandbox) -> None:
    @app.get("/sandbox/credentials")
    async def credentials() -> Response:
        return json_response(200, sandbox.merchant_credentials())

    @app.get("/sandbox/certs/{name}")
    async def certs(name: str) -> Response:
        """The files a merchant downloads: its .pfx (password 000000), UnionPay's root and
        intermediate certificates."""
        creds = sandbox.creds
        if name == "merchant.pfx":
            key, cert = load_private_key(creds.sign_private_key), load_cert(creds.sign_cert)
            pfx = pki.merchant_pfx(key, cert, PFX_PASSWORD)
            return Response(pfx, media_type="application/x-pkcs12")
        pems = {"acp_root.cer": creds.root_cert, "acp_middle.cer": creds.middle_cert,
                "acp_sign.cer": creds.unionpay_sign_cert}  # fmt: skip
        if name not in pems:
            raise p.SandboxError(404, "NOT_FOUND", "没有这个文件")
        return Response(pems[name].encode("ascii"), media_type="application/x-x509-ca-cert")

    @app.get("/sandbox/health")
    async def health() -> Response:
        return json_response(200, {"status": "ok", "mer_id": sandbox.creds.mer_id})

    @app.post("/sandbox/pay")
    async def pay(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            payload = _object_of(await request.body())
            return json_response(200, await asyncio.to_thread(payer.pay, sandbox, payload))
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            result = await asyncio.to_thread(payer.pay, sandbox, form)
        except p.SandboxError as exc:
            return _page(sandbox, None, exc.message, exc.status, exc.code)
        consume = payer.find(sandbox, form)
        return _page(sandbox, consume, _word(consume), front_post=result["front_post"])

    @app.get("/sandbox/qr/{token}")
    async def scan(token: str) -> Response:
        return _opened(sandbox, token)

    @app.get("/sandbox/cashier/{token}")
    async def cashier(token: str) -> Response:
        return _opened(sandbox, token)

    @app.post("/sandbox/close-day")
    async def close_day(request: Request) -> Response:
        payload = _object_of(await request.body())
        done = await asyncio.to_thread(bills.close_day, sandbox, payload.get("date"), time.time())
        return json_response(200, done)


def _word(consume: Consume) -> str:
    return {"PAID": "支付成功", "FAILED": "支付失败（发卡行拒绝）"}.get(consume.status, "")


def _opened(sandbox: UnionPaySandbox, token: str) -> Response:
    consume = sandbox.store.consume_by("token", token)
    if consume is None:
        return _page(sandbox, None, "交易不存在", 404, "TRADE_NOT_EXIST")
    front_post = payer.front_post(sandbox, consume)
    return _page(sandbox, consume, _word(consume) or None, front_post=front_post)


def _page(
    sandbox: UnionPaySandbox,
    consume: Consume | None,
    message: str | None,
    status: int = 200,
    error: str | None = None,
    front_post: Mapping[str, Any] | None = None,
) -> Response:
    """The pay page (银联在线支付): Pay / Fail buttons; once decided, the signed form that goes
    back to the merchant's frontUrl (auto-posted)."""
    now = time.time()
    html = _templates.get_template("pay.html").render(
        consume=consume,
        amount=format_major(consume.amount, "CNY") if consume else None,
        payable=consume is not None and consume.status == "UNPAID" and now < consume.pay_timeout,
        expired=consume is not None and consume.status == "UNPAID" and now >= consume.pay_timeout,
        message=message,
        error=error,
        mer_id=sandbox.creds.mer_id,
        front_post=front_post,
    )
    return HTMLResponse(html, status_code=status)


# --- listings -----------------------------------------------------------------------------------


def _add_listing_routes(app: FastAPI, sandbox: UnionPaySandbox) -> None:
    @app.get("/sandbox/orders")
    async def orders(limit: int = 100) -> Response:
        listed = sandbox.store.list_consumes(max(1, min(limit, 1000)))
        return json_response(200, {"orders": [payer.order_view(c) for c in listed]})

    @app.get("/sandbox/refunds")
    async def refunds(limit: int = 100) -> Response:
        """Every refund and revoke, newest first, named as paygrid names them; done when
        answered (``SUCCESS``)."""
        listed = sandbox.store.list_backs(max(1, min(limit, 1000)))
        views = []
        for b in listed:
            orig = sandbox.store.consume_by("query_id", b.orig_query_id)
            views.append(
                {
                    "out_refund_no": ref_of(b.order_id) or b.order_id,
                    "out_trade_no": (ref_of(orig.order_id) or orig.order_id) if orig else None,
                    "txn_type": b.txn_type,
                    "amount": b.amount,
                    "status": b.status,
                    "query_id": b.query_id,
                    "orig_query_id": b.orig_query_id,
                }
            )
        return json_response(200, {"refunds": views})

    @app.get("/sandbox/notifications")
    async def notifications(order_id: str | None = None, limit: int = 100) -> Response:
        listed = sandbox.store.list_notifications(order_id, max(1, min(limit, 1000)))
        rows = [
            {k: v for k, v in dataclasses.asdict(n).items() if k not in ("id", "body")}
            for n in listed
        ]
        return json_response(200, {"notifications": rows})


# --- knobs --------------------------------------------------------------------------------------


def _add_knob_routes(app: FastAPI, sandbox: UnionPaySandbox) -> None:
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
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only then
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
        print(f"unionpay sandbox listening on {base_url}", flush=True)

    asyncio.run(_serve(server, sock, ready))


async def _serve(server: uvicorn.Server, sock: socket.socket, ready: Callable[[], None]) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        ready()
    await task
