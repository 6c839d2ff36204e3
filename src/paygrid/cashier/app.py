"""The cashier web app. It holds no business logic of the merchant: it shows the order, lets
the payer choose a method, shows the channel's QR code and follows the payment's status.
Server-rendered HTML, a few lines of plain JavaScript for polling, none required."""

from __future__ import annotations

import hmac
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import qrcode
from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from PIL import Image
from starlette.concurrency import run_in_threadpool

from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE, utcnow
from paygrid.kernel.money import format_major
from paygrid.ops.observability import Check, add_ops_routes
from paygrid.payments.domain import Payment, PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import PaymentService

HERE = Path(__file__).parent
METHOD_LABELS = {"wechatpay": "微信支付 WeChat Pay"}
POLL_INTERVAL_MS = 1500
QR_CSS_PX = 264  # the <img>'s size on the page; the PNG is twice that for HiDPI screens
QR_QUIET_ZONE = 4  # modules of white around the code, as ISO/IEC 18004 asks


def qr_png(text: str, css_px: int = QR_CSS_PX) -> bytes:
    """A square PNG of ``2 * css_px`` pixels with ``text`` as a QR code whose modules are all
    the same, even number of pixels: shown at ``css_px`` (or 2x) it scales without blurring or
    uneven modules, which keeps it easy to scan."""
    code = qrcode.QRCode(border=QR_QUIET_ZONE)
    code.add_data(text)
    code.make(fit=True)
    matrix: list[list[bool]] = code.get_matrix()
    modules = len(matrix)
    box = max(2, (2 * css_px // modules) & ~1)
    side = max(2 * css_px, modules * box)
    small = Image.new("L", (modules, modules), 255)
    small.putdata([0 if dark else 255 for row in matrix for dark in row])
    canvas = Image.new("L", (side, side), 255)
    offset = ((side - modules * box) // 2) & ~1
    canvas.paste(
        small.resize((modules * box, modules * box), Image.Resampling.NEAREST), (offset, offset)
    )
    buf = io.BytesIO()
    canvas.convert("1").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class MerchantView:
    name: str
    methods: tuple[str, ...]


MerchantLookup = Callable[[str], MerchantView]


def create_cashier_app(
    payments: PaymentService,
    merchant_of: MerchantLookup,
    zone: str = DEFAULT_BUSINESS_ZONE,
    checks: Mapping[str, Check] | None = None,
) -> FastAPI:
    app = FastAPI(title="paygrid cashier", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def load(payment_id: str, token: str) -> Payment:
        try:
            payment = payments.get(payment_id)
        except PaymentRejected:
            payment = None
        if payment is None or not hmac.compare_digest(payment.cashier_token, token):
            raise LookupError(payment_id)
        return payment

    def not_found() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>Not found</title><p>No such payment.</p>", status_code=404
        )

    def state_of(payment: Payment) -> str:
        if payment.status in (PaymentStatus.CREATED, PaymentStatus.PAYING) and payment.is_expired(
            utcnow()
        ):
            return "EXPIRED"
        return payment.status.value

    add_ops_routes(app, checks or {})

    @app.get("/pay/{payment_id}", response_class=HTMLResponse)
    async def page(request: Request, payment_id: str, t: str = "", error: str = "") -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        merchant = await run_in_threadpool(merchant_of, payment.mchid)
        context: dict[str, Any] = {
            "payment": payment,
            "token": t,
            "merchant": merchant,
            "state": state_of(payment),
            "amount": format_major(payment.amount, payment.currency),
            "items": [
                {
                    "name": i.name,
                    "sku": i.sku,
                    "quantity": i.quantity,
                    "unit": format_major(i.unit_amount, payment.currency),
                    "line": format_major(i.quantity * i.unit_amount, payment.currency),
                }
                for i in payment.items
            ],
            "discounts": [
                {"name": d.name, "amount": format_major(d.amount, payment.currency)}
                for d in payment.discounts
            ],
            "methods": [(m, METHOD_LABELS.get(m, m)) for m in merchant.methods],
            "poll_ms": POLL_INTERVAL_MS,
            "expires": payment.expire_at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
            "qr_px": QR_CSS_PX,
            "error": error[:200],
        }
        return templates.TemplateResponse(request, "pay.html", context)

    @app.post("/pay/{payment_id}/method")
    async def choose(payment_id: str, t: str = Form(""), method: str = Form("")) -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        merchant = await run_in_threadpool(merchant_of, payment.mchid)
        target = f"/pay/{payment_id}?t={t}"
        if method not in merchant.methods:
            return RedirectResponse(target + "&error=unknown+method", status_code=303)
        try:
            await run_in_threadpool(payments.start_channel_payment, payment_id, method, "native")
        except PaymentRejected as exc:
            return RedirectResponse(f"{target}&error={exc.code}", status_code=303)
        return RedirectResponse(target, status_code=303)

    @app.get("/pay/{payment_id}/qr.png")
    async def qr(payment_id: str, t: str = "") -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        if not payment.code_url or payment.status != PaymentStatus.PAYING:
            return Response(status_code=404)
        png = await run_in_threadpool(qr_png, payment.code_url)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/pay/{payment_id}/status")
    async def status(payment_id: str, t: str = "") -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return JSONResponse({"code": "PAYMENT_NOT_FOUND"}, status_code=404)
        return JSONResponse(
            {
                "status": payment.status.value,
                "state": state_of(payment),
                "return_url": payment.return_url,
            },
            headers={"Cache-Control": "no-store"},
        )

    return app
