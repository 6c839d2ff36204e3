"""The payer banks' pay pages (网银支付页, MODELLED) for gateway orders.

- ``POST /bank/{bank_id}/gateway``: the payer's browser posts the page fields the platform
  signed (the adapter's FORM); they are verified (signature, ids, the order behind the token)
  and the page shows the bank, the amount and the merchant with 支付 / 失败 buttons.
- ``GET /bank/{bank_id}/gateway?Tkn=…``: the same page again (a reload; the token is the
  order's secret); an unknown token, or an order closed or expired, is an error page.
- ``POST /bank/{bank_id}/gateway/pay`` (``Tkn``, ``outcome``): the payer's choice; the result
  is notified, and the browser goes back to the order's return URL (303), or sees the result.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.banks import bank_code
from paygrid.channels.netsunion.sandbox import pages
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox.store import Trade
from paygrid.kernel.banks import BANKS
from paygrid.kernel.money import format_major

MAX_FORM_FIELDS = 16
STATE_WORDS = {
    wire.BIZ_PROCESSING: "待支付 Waiting for payment",
    wire.BIZ_SUCCESS: "已支付 Paid",
    wire.BIZ_FAILED: "支付失败 Failed",
    wire.TRX_CLOSED: "已关闭 Closed",
}
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
)

if TYPE_CHECKING:
    from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox


def add_routes(app: FastAPI, sandbox: NetsUnionSandbox) -> None:
    target = pages.PAGE_PATH

    @app.post(target)
    async def posted(request: Request, bank_id: str) -> Response:
        try:
            form = await _form(request, bank_id)
            trade = await asyncio.to_thread(
                pages.verified_form, sandbox, bank_id, form, time.time()
            )
        except p.SandboxError as exc:
            return _error(bank_id, exc)
        return _shown(bank_id, trade)

    @app.get(target)
    async def reopened(bank_id: str, Tkn: str = "") -> Response:  # Tkn: the form field's name
        try:
            _known(bank_id)
            trade = await asyncio.to_thread(pages.by_token, sandbox, Tkn, time.time())
            _same_bank(trade, bank_id)
        except p.SandboxError as exc:
            return _error(bank_id, exc)
        return _shown(bank_id, trade)

    @app.post(target + "/pay")
    async def decided(request: Request, bank_id: str) -> Response:
        try:
            form = await _form(request, bank_id)
            trade = await asyncio.to_thread(_pay, sandbox, bank_id, form)
        except p.SandboxError as exc:
            return _error(bank_id, exc)
        back = pages.return_url(trade)
        if back is not None:
            return RedirectResponse(back, status_code=303)
        return _shown(bank_id, trade)


def _pay(sandbox: NetsUnionSandbox, bank_id: str, form: dict[str, str]) -> Trade:
    outcome = form.get("outcome", "")
    if outcome not in ("SUCCESS", "FAIL"):
        raise p.SandboxError(400, "PARAM_ERROR", "outcome 只能是 SUCCESS 或 FAIL")
    now = time.time()
    with sandbox.store.transaction():
        trade = pages.by_token(sandbox, form.get("Tkn", ""), now)
        _same_bank(trade, bank_id)
        decided = pages.pay_order(sandbox, trade, outcome, now)
    sandbox.sender.wake()
    return decided


def _same_bank(trade: Trade, bank_id: str) -> None:
    if trade.bank_id != bank_id:
        raise p.SandboxError(404, "TOKEN_UNKNOWN", "支付令牌无效：订单不属于本行")


def _known(bank_id: str) -> None:
    if bank_code(bank_id) is None:
        raise p.SandboxError(404, "BANK_UNKNOWN", "没有这家银行的支付页")


async def _form(request: Request, bank_id: str) -> dict[str, str]:
    _known(bank_id)
    data = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    items = [(k, v) for k, v in data.multi_items() if isinstance(v, str)]
    form = dict(items)
    if len(form) != len(data.multi_items()):
        raise p.SandboxError(400, "PARAM_ERROR", "表单字段重复或含文件")
    return form


def _bank_name(bank_id: str) -> str | None:
    code = bank_code(bank_id)
    return BANKS[code] if code else None


def _page_path(bank_id: str) -> str | None:
    return pages.PAGE_PATH.format(bank_id=bank_id) + "/pay" if bank_code(bank_id) else None


def _shown(bank_id: str, trade: Trade) -> Response:
    """The order's page: payable, or its state; a closed order is an error page."""
    closed = pages.refusal(trade)
    if closed is not None and trade.status == wire.TRX_CLOSED:
        return _error(bank_id, closed)
    payable = trade.status == wire.BIZ_PROCESSING
    message = None if payable else "本订单已处理，无需再次支付"
    return _render(bank_id, trade, message, None, 200, payable)


def _error(bank_id: str, exc: p.SandboxError) -> Response:
    return _render(bank_id, None, exc.message, exc.code, exc.status, False)


def _render(
    bank_id: str,
    trade: Trade | None,
    message: str | None,
    error: str | None,
    status: int,
    payable: bool,
) -> Response:
    html = _templates.get_template("bankpage.html").render(
        bank_name=_bank_name(bank_id),
        trade=trade,
        amount=format_major(trade.amount, "CNY") if trade else None,
        state=STATE_WORDS.get(trade.status, trade.status) if trade else None,
        expires=p.beijing(trade.expires_at) if trade else None,
        payable=payable,
        pay_action=_page_path(bank_id),
        back_url=pages.return_url(trade) if trade else None,
        message=message,
        error=error,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
