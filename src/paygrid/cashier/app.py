"""The cashier web app. It holds no business logic of the merchant: it shows the order, lets
the payer choose a method, shows the channel's QR code and follows the payment's status.
Server-rendered HTML, a few lines of plain JavaScript for polling, none required."""

from __future__ import annotations

import hmac
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import qrcode
from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paygrid.agreements.service import AgreementService
from paygrid.cashier import accounts
from paygrid.channels import registry
from paygrid.channels.ports import PayerActionKind
from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE, utcnow
from paygrid.kernel.ids import is_id
from paygrid.kernel.money import format_major
from paygrid.ops.http_limits import BodyLimit
from paygrid.ops.observability import Check, add_health_routes
from paygrid.payments.domain import Payment, PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import PaymentService

HERE = Path(__file__).parent
log = logging.getLogger(__name__)
METHOD_LABELS = {
    "native": "扫码 QR code",
    "page": "网页支付 Web",
    "h5": "手机网页 Mobile web",
    "agreement": "银行卡快捷支付 Bank account",
}
POLL_INTERVAL_MS = 1500
QR_CSS_PX = 264  # the <img>'s size on the page; the PNG is twice that for HiDPI screens
QR_QUIET_ZONE = 4  # modules of white around the code, as ISO/IEC 18004 asks
MAX_BODY_BYTES = 64 * 1024  # the only body is the method form

# The page loads its own CSS, JS and QR image and polls its own status URL; nothing inline,
# nothing from elsewhere, never framed (clickjacking), and no Referer with the token in it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

# What the page may say when starting a payment failed: a fixed text per known code. The
# ``error`` query parameter only selects one of these; any other value shows nothing, so a
# crafted link cannot put its own words on a genuine cashier page.
ERROR_MESSAGES = {
    "UNKNOWN_METHOD": "请选择可用的支付方式 Choose one of the offered methods",
    "PAYMENT_ALREADY_PAID": "订单已支付 This payment is already paid",
    "PAYMENT_CLOSED": "订单已关闭 This payment is closed",
    "PAYMENT_FAILED": "订单支付失败 This payment failed",
    "PAYMENT_EXPIRED": "订单已过期 This payment has expired",
    "UNSUPPORTED_CURRENCY": "该支付方式不支持此币种 This method does not take this currency",
    "CHANNEL_UNAVAILABLE": "支付通道暂不可用，请稍后再试 The channel is unavailable; try again",
    "CHANNEL_ERROR": "支付通道拒绝了此订单 The channel refused this payment",
    "CONCURRENT_UPDATE": "系统繁忙，请重试 Busy; please try again",
    "DUPLICATE_OUT_AGREEMENT_NO": "签约信息有变，请重新填写 The details changed; fill in again",
    "AGREEMENT_NOT_PENDING": "签约已结束，请重新签约 The signing is over; sign again",
}


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:  # a page may narrow or widen one (the form page)
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


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
    methods: tuple[str, ...]  # the channels the merchant may use


@dataclass(frozen=True, slots=True)
class Choice:
    """One button of the cashier: a channel and one of its browser methods."""

    value: str  # "channel:method", as the form posts it
    label: str
    element_id: str  # method-<channel> for a channel's first method, method-<channel>-<method>


def choices(payments: PaymentService, merchant: MerchantView) -> list[Choice]:
    """The merchant's channels in its order, each with the methods a browser cashier offers
    (the channel's ``cashier_methods``); a channel this platform lacks is left out."""
    offered: list[Choice] = []
    for channel in merchant.methods:
        if channel not in payments.channel_names or channel not in registry.BY_NAME:
            continue
        methods = payments.capabilities(channel).cashier_methods
        for i, method in enumerate(methods):
            label = registry.spec(channel).title
            if len(methods) > 1:
                label = f"{label} · {METHOD_LABELS.get(method, method)}"
            element = f"method-{channel}" if i == 0 else f"method-{channel}-{method}"
            offered.append(Choice(f"{channel}:{method}", label, element))
    return offered


MerchantLookup = Callable[[str], MerchantView]


def create_cashier_app(
    payments: PaymentService,
    merchant_of: MerchantLookup,
    zone: str = DEFAULT_BUSINESS_ZONE,
    checks: Mapping[str, Check] | None = None,
    agreements: AgreementService | None = None,
) -> FastAPI:
    app = FastAPI(title="paygrid cashier", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(SecurityHeaders)  # outermost: the 413 carries the headers too
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def load(payment_id: str, token: str) -> Payment:
        if not is_id(payment_id, "pay"):
            raise LookupError(payment_id)
        try:
            payment = payments.get(payment_id)
        except PaymentRejected:
            payment = None
        # As bytes: compare_digest refuses str with non-ASCII characters.
        if payment is None or not hmac.compare_digest(
            payment.cashier_token.encode(), token.encode()
        ):
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

    add_health_routes(app, checks or {})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """Last resort: a plain page, the traceback only in the log."""
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return HTMLResponse(
            "<!doctype html><title>Error</title><p>Something went wrong; please try again.</p>",
            status_code=500,
            headers=SECURITY_HEADERS,
        )

    @app.get("/pay/{payment_id}", response_class=HTMLResponse)
    async def page(
        request: Request, payment_id: str, t: str = "", error: str = "", go: str = ""
    ) -> Response:
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
            "methods": choices(payments, merchant),
            "channel_title": registry.spec(payment.channel).title if payment.channel else "",
            "action": payment.payer_action,
            "go_on": go == "1",
            "poll_ms": POLL_INTERVAL_MS,
            "expires": payment.expire_at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
            "qr_px": QR_CSS_PX,
            "error": ERROR_MESSAGES.get(error, ""),
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
        offered = choices(payments, merchant)
        # A bare channel name (the form of earlier versions) is its first method.
        method = next((c.value for c in offered if c.element_id == f"method-{method}"), method)
        if method not in {c.value for c in offered}:
            return RedirectResponse(target + "&error=UNKNOWN_METHOD", status_code=303)
        channel, channel_method = method.split(":", 1)
        first = accounts.needs(payments, channel, channel_method)
        if first is not None:  # the payer's bank, or an agreement, before the order
            return RedirectResponse(
                f"/pay/{payment_id}/{first}?t={t}&m={quote(method)}", status_code=303
            )
        try:
            started = await run_in_threadpool(
                payments.start_channel_payment, payment_id, channel, channel_method
            )
        except PaymentRejected as exc:
            return RedirectResponse(f"{target}&error={exc.code}", status_code=303)
        action = started.payer_action
        if action is not None and action.kind in (PayerActionKind.REDIRECT, PayerActionKind.FORM):
            # Back to our page, which sends the payer on: a redirect of this form post to
            # another origin would break the page's form-action policy.
            return RedirectResponse(target + "&go=1", status_code=303)
        return RedirectResponse(target, status_code=303)

    if agreements is not None:
        accounts.add_account_routes(app, payments, agreements, load, templates, not_found)

    @app.get("/pay/{payment_id}/go", response_class=HTMLResponse)
    async def go(request: Request, payment_id: str, t: str = "") -> Response:
        """A form the channel wants posted from the payer's browser: sent on at once."""
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        action = payment.payer_action
        if action is None or action.kind != PayerActionKind.FORM or action.url is None:
            return RedirectResponse(f"/pay/{payment_id}?t={t}", status_code=303)
        # This page alone may post to the channel's gateway (form-action), nowhere else.
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(action.url))
        csp = SECURITY_HEADERS["Content-Security-Policy"].replace(
            "form-action 'self'", f"form-action {origin}"
        )
        context = {"action": action, "channel_title": registry.spec(payment.channel or "").title}
        response = templates.TemplateResponse(request, "go.html", context)
        response.headers["Content-Security-Policy"] = csp
        return response

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
