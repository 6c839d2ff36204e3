"""The cashier's account-based payments: the payer picks a bank (a gateway payment at the
payer's bank), or signs an agreement for a bank account (协议支付: the form, the SMS code) and
the payment then debits it. The account's details go to the channel through the agreement
service and are never kept by the cashier."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from paygrid.agreements.domain import Agreement, AgreementStatus
from paygrid.agreements.service import AgreementService, RequestAgreement
from paygrid.channels.ports import Payer, PayerField
from paygrid.kernel.banks import BANKS
from paygrid.kernel.ids import is_id
from paygrid.payments.domain import Payment
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import PaymentService

Loader = Callable[[str, str], Payment]
FIELD_LIMITS = {"account_no": 19, "holder_name": 64, "id_no": 18, "mobile": 11, "sms_code": 8}


def needs(payments: PaymentService, channel: str, method: str) -> str | None:
    """Which page a method needs before its order: ``agreement``, ``bank``, or None."""
    fields = payments.capabilities(channel).payer_fields.get(method, frozenset())
    if PayerField.AGREEMENT in fields:
        return "agreement"
    if PayerField.BANK in fields:
        return "bank"
    return None


def add_account_routes(
    app: FastAPI,
    payments: PaymentService,
    agreements: AgreementService,
    load: Loader,
    templates: Jinja2Templates,
    not_found: Callable[[], HTMLResponse],
) -> None:
    def page(request: Request, name: str, payment: Payment, token: str, **more: Any) -> Response:
        context = {"payment": payment, "token": token, "banks": BANKS, **more}
        return templates.TemplateResponse(request, name, context)

    def back(payment_id: str, token: str, error: str = "") -> Response:
        target = f"/pay/{payment_id}?t={token}" + (f"&error={error}" if error else "")
        return RedirectResponse(target, status_code=303)

    @app.get("/pay/{payment_id}/bank", response_class=HTMLResponse)
    async def bank_page(request: Request, payment_id: str, t: str = "", m: str = "") -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        return page(request, "bank.html", payment, t, method=m)

    @app.post("/pay/{payment_id}/bank")
    async def bank_chosen(
        payment_id: str, t: str = Form(""), m: str = Form(""), bank: str = Form("")
    ) -> Response:
        try:
            await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        channel, _, method = m.partition(":")
        if bank not in BANKS or not channel or needs(payments, channel, method) != "bank":
            return back(payment_id, t, "UNKNOWN_METHOD")
        try:
            await run_in_threadpool(
                payments.start_channel_payment, payment_id, channel, method, Payer(bank=bank)
            )
        except PaymentRejected as exc:
            return back(payment_id, t, exc.code)
        return RedirectResponse(f"/pay/{payment_id}?t={t}&go=1", status_code=303)

    @app.get("/pay/{payment_id}/agreement", response_class=HTMLResponse)
    async def agreement_form(
        request: Request, payment_id: str, t: str = "", m: str = "", message: str = ""
    ) -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
        except LookupError:
            return not_found()
        return page(request, "agreement.html", payment, t, method=m, step="details",
                    message=message[:200])  # fmt: skip

    @app.post("/pay/{payment_id}/agreement")
    async def agreement_requested(request: Request, payment_id: str) -> Response:
        form = await request.form()
        got = {k: str(form.get(k, ""))[:64] for k in ("t", "m", "bank", *FIELD_LIMITS)}
        try:
            payment = await run_in_threadpool(load, payment_id, got["t"])
        except LookupError:
            return not_found()
        channel, _, method = got["m"].partition(":")
        if not channel or needs(payments, channel, method) != "agreement":
            return back(payment_id, got["t"], "UNKNOWN_METHOD")
        cmd = _request(payment, channel, got)
        if cmd is None:
            return page(request, "agreement.html", payment, got["t"], method=got["m"],
                        step="details", message="请检查填写的信息 Check the details")  # fmt: skip
        try:
            agreement, _ = await run_in_threadpool(agreements.request, cmd)
        except PaymentRejected as exc:
            return back(payment_id, got["t"], exc.code)
        return _next(request, payment, got["t"], got["m"], agreement)

    @app.post("/pay/{payment_id}/agreement/{agreement_id}/confirm")
    async def agreement_confirmed(
        request: Request,
        payment_id: str,
        agreement_id: str,
        t: str = Form(""),
        m: str = Form(""),
        sms_code: str = Form(""),
    ) -> Response:
        try:
            payment = await run_in_threadpool(load, payment_id, t)
            agreement = await run_in_threadpool(_own, agreements, payment, agreement_id)
        except LookupError:
            return not_found()
        if not sms_code.isdigit() or len(sms_code) > FIELD_LIMITS["sms_code"]:
            return page(request, "agreement.html", payment, t, method=m, step="code",
                        agreement=agreement, message="验证码为数字 The code is digits")  # fmt: skip
        try:
            agreement = await run_in_threadpool(
                agreements.confirm, payment.mchid, agreement_id, sms_code
            )
        except PaymentRejected as exc:
            return back(payment_id, t, exc.code)
        return _next(request, payment, t, m, agreement)

    def _next(
        request: Request, payment: Payment, token: str, m: str, agreement: Agreement
    ) -> Response:
        """After the channel's answer: the code page, the form again, or the debit."""
        if agreement.status == AgreementStatus.PENDING_CODE:
            return page(request, "agreement.html", payment, token, method=m, step="code",
                        agreement=agreement, message=agreement.message)  # fmt: skip
        if agreement.status != AgreementStatus.SIGNED:
            return page(request, "agreement.html", payment, token, method=m, step="details",
                        message=agreement.message or "签约失败 Signing failed")  # fmt: skip
        return RedirectResponse(
            f"/pay/{payment.payment_id}/agreement/{agreement.agreement_id}/pay?t={token}&m={m}",
            status_code=303,
        )

    @app.get("/pay/{payment_id}/agreement/{agreement_id}/pay")
    async def debit(payment_id: str, agreement_id: str, t: str = "", m: str = "") -> Response:
        """The payment debits the signed agreement (a GET after the confirm's POST, so a
        reload repeats nothing: the order is idempotent on the payment)."""
        try:
            payment = await run_in_threadpool(load, payment_id, t)
            agreement = await run_in_threadpool(_own, agreements, payment, agreement_id)
        except LookupError:
            return not_found()
        channel, _, method = m.partition(":")
        if agreement.status != AgreementStatus.SIGNED or channel != agreement.channel:
            return back(payment_id, t, "UNKNOWN_METHOD")
        payer = Payer(bank=agreement.bank, agreement_no=agreement.agreement_no)
        try:
            await run_in_threadpool(
                payments.start_channel_payment, payment_id, channel, method, payer
            )
        except PaymentRejected as exc:
            return back(payment_id, t, exc.code)
        return back(payment_id, t)


def _request(payment: Payment, channel: str, got: dict[str, str]) -> RequestAgreement | None:
    """The form as a signing request; None when a field is plainly wrong."""
    ok = (
        got["bank"] in BANKS
        and got["account_no"].isdigit()
        and 12 <= len(got["account_no"]) <= FIELD_LIMITS["account_no"]
        and 0 < len(got["holder_name"].strip()) <= FIELD_LIMITS["holder_name"]
        and len(got["id_no"]) == 18
        and got["id_no"][:17].isdigit()
        and (got["id_no"][17].isdigit() or got["id_no"][17] == "X")
        and len(got["mobile"]) == 11
        and got["mobile"].isdigit()
    )
    if not ok:
        return None
    # One agreement per payment and account: the same details again are a repeat.
    details = ("bank", "account_no", "holder_name", "id_no", "mobile")
    digest = hashlib.sha256("|".join(got[k] for k in details).encode())
    return RequestAgreement(
        mchid=payment.mchid,
        out_agreement_no=f"{payment.payment_id}-{digest.hexdigest()[:8]}",
        channel=channel,
        bank=got["bank"],
        account_no=got["account_no"],
        holder_name=got["holder_name"].strip(),
        id_type="01",
        id_no=got["id_no"],
        mobile=got["mobile"],
        allowed_channels=frozenset({channel}),
    )


def _own(agreements: AgreementService, payment: Payment, agreement_id: str) -> Agreement:
    """The agreement signed in this payment's cashier, else LookupError (not found)."""
    if not is_id(agreement_id, "agr"):
        raise LookupError(agreement_id)
    try:
        agreement = agreements.get(payment.mchid, agreement_id)
    except PaymentRejected:
        raise LookupError(agreement_id) from None
    if not agreement.out_agreement_no.startswith(payment.payment_id + "-"):
        raise LookupError(agreement_id)
    return agreement
