"""Alipay open platform as a :class:`~paygrid.channels.ports.ChannelAdapter` (支付宝通道).

On top of :class:`~paygrid.channels.alipay.client.AlipayClient` (signing, transport, answer
verification) it maps Alipay's methods and quirks onto the port:

- ``native`` → ``alipay.trade.precreate``: a QR code. Precreate creates no trade: until the
  payer scans, query and close answer ``ACQ.TRADE_NOT_EXIST`` (NOT_FOUND: normal for a fresh
  order, it closes nothing) and a "closed" unscanned QR stays payable until ``time_expire``,
  which is the payment's ``expire_at``.
- ``page``/``h5`` → ``alipay.trade.page.pay``/``alipay.trade.wap.pay``: no server call; the
  signed request is a REDIRECT, ``<gateway>?<signed query>`` (python-alipay-sdk's order string;
  the Java SDK's ``pageExecute(request, "GET")``). The browser comes back to ``return_url``.
- ``TRADE_CLOSED`` after a full refund is SUCCESS with the original amount (``parsing.py``).
- A business error is acted on (NOT_FOUND, CLOSED, ALREADY_PAID) only when Alipay signed it;
  an unsigned error answer is a retryable ChannelError.
- Refunds are synchronous: ``fund_change`` Y with ``send_back_fee`` is SUCCESS at once; else
  the refund query tells. A refund notify carries only the total refunded so far, so its
  amount comes from the refund query (``alipay.trade.fastpay.refund.query``).

Notify answers: exactly ``success`` (200, text/plain) stops Alipay's retries; anything else is
retried for about 25 hours (4m, 10m, 10m, 1h, 2h, 6h, 15h). paygrid's refusals are ``fail``
with a status per refusal, so they show in logs and metrics; Alipay does not tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.bill import parse_bill_zip
from paygrid.channels.alipay.capabilities import CAPABILITIES
from paygrid.channels.alipay.client import (
    PAGE_PAY,
    WAP_PAY,
    AlipayApiError,
    AlipayClient,
    AlipayConfig,
    to_yuan,
)
from paygrid.channels.alipay.credentials import GATEWAY_PATH
from paygrid.channels.alipay.parsing import (
    CURRENCY,
    expire_text,
    is_refund_notify,
    notify_id_of,
    opt_str,
    read_form,
    refund_from_answer,
    refund_from_notify,
    refund_from_query,
    trade_from_notify,
    trade_from_query,
)
from paygrid.channels.ports import (
    BILL_NOT_READY,
    BillLine,
    Callback,
    CallbackRefusal,
    CallbackRejected,
    CallbackReply,
    ChannelAccount,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    PayerAction,
    PayerActionKind,
    RefundCallback,
    RefundRequest,
    RefundState,
    RefundTrade,
    Trade,
    TradeState,
)

PRECREATE = "alipay.trade.precreate"
QUERY = "alipay.trade.query"
CLOSE = "alipay.trade.close"
REFUND = "alipay.trade.refund"
REFUND_QUERY = "alipay.trade.fastpay.refund.query"
TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
# What close answers for a trade that is no longer WAIT_BUYER_PAY: paid, or closed already.
CLOSE_CONFLICTS = frozenset(
    {"ACQ.TRADE_STATUS_ERROR", "ACQ.TRADE_HAS_SUCCESS", "ACQ.TRADE_HAS_CLOSED",
     "ACQ.TRADE_HAS_FINISHED"}
)  # fmt: skip
# Refund refusals worth the same refund again later (the rest are final).
RETRYABLE_REFUND_CODES = frozenset({"ACQ.SELLER_BALANCE_NOT_ENOUGH", "ACQ.SYSTEM_ERROR"})
PRODUCT_CODES = {
    "native": "FACE_TO_FACE_PAYMENT",
    "page": "FAST_INSTANT_TRADE_PAY",
    "h5": "QUICK_WAP_WAY",
}
BROWSER_METHODS = {"page": PAGE_PAY, "h5": WAP_PAY}
BILL_TYPE = "trade"  # 业务明细: a line per payment and per refund
MAX_SUBJECT_CHARS = 256
MAX_REASON_CHARS = 256
ACK = b"success"
NACK = b"fail"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
CALLBACK_REFUSALS: Mapping[CallbackRefusal, int] = {
    CallbackRefusal.BAD_SIGNATURE: 401,
    CallbackRefusal.UNDECRYPTABLE: 400,  # Alipay notifies are not encrypted: never given
    CallbackRefusal.MALFORMED: 400,
    CallbackRefusal.UNKNOWN_PAYMENT: 404,
    CallbackRefusal.RETRY_LATER: 503,
}


class AlipayAdapter:
    name = "alipay"
    capabilities = CAPABILITIES

    def __init__(self, config: AlipayConfig, http: httpx.Client | None = None) -> None:
        if not config.seller_id:
            raise ValueError("Alipay credentials need the seller's PID (seller_id)")
        self._client = AlipayClient(config, http)
        self.account = ChannelAccount(merchant_id=config.seller_id, app_id=config.app_id)

    # --- orders (下单/查单/关单) -------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayerAction:
        biz = self._order_biz(request)
        browser = BROWSER_METHODS.get(request.method)
        if browser is not None:
            form = self._client.page_pay(
                browser, biz, return_url=request.return_url, notify_url=request.notify_url
            )
            return PayerAction(PayerActionKind.REDIRECT, url=form.url())
        node = self._call(PRECREATE, biz, notify_url=request.notify_url)
        qr_code, echoed = opt_str(node, "qr_code"), node.get("out_trade_no")
        if qr_code is None or echoed not in (None, request.payment_ref):
            raise ChannelError(
                "INVALID_RESPONSE", "the precreate answer has no qr_code for us", retryable=True
            )
        return PayerAction(PayerActionKind.QR_CODE, content=qr_code)

    def _order_biz(self, request: OrderRequest) -> dict[str, Any]:
        product_code = PRODUCT_CODES.get(request.method)
        if product_code is None:
            raise ChannelError("INVALID_PARAMETER", f"unsupported method {request.method!r}")
        if request.amount.currency != CURRENCY:
            raise ChannelError("INVALID_PARAMETER", "Alipay takes CNY only")
        biz: dict[str, Any] = {
            "out_trade_no": request.payment_ref,
            "total_amount": to_yuan(request.amount.minor),
            "subject": request.description[:MAX_SUBJECT_CHARS],
            "product_code": product_code,
        }
        if request.expire_at is not None:
            biz["time_expire"] = expire_text(request.expire_at)
        if request.attach:
            biz["passback_params"] = quote(request.attach, safe="")  # Alipay wants it encoded
        if request.method == "h5" and request.return_url:
            biz["quit_url"] = request.return_url  # where "back" on Alipay's page goes
        return biz

    def query(self, payment_ref: str) -> Trade:
        """The trade as a fact. NOT_FOUND for a QR not scanned yet (or never): not a close."""
        try:
            node = self._call(QUERY, {"out_trade_no": payment_ref})
        except AlipayApiError as exc:
            if exc.code == TRADE_NOT_EXIST:
                return Trade(payment_ref, TradeState.NOT_FOUND, raw_state=exc.code)
            raise
        return trade_from_query(node, self.account)

    def close(self, payment_ref: str) -> CloseOutcome:
        """Close at Alipay. A trade Alipay does not have is CLOSED (an unscanned QR: it stays
        payable until time_expire); a refusal because the trade moved on is settled by a
        query: paid (also refunded since) is ALREADY_PAID, closed is CLOSED."""
        try:
            self._call(CLOSE, {"out_trade_no": payment_ref})
        except AlipayApiError as exc:
            if exc.code == TRADE_NOT_EXIST:
                return CloseOutcome.CLOSED
            if exc.code not in CLOSE_CONFLICTS:
                raise
            refused = exc
        else:
            return CloseOutcome.CLOSED
        trade = self.query(payment_ref)
        if trade.state is TradeState.SUCCESS:
            return CloseOutcome.ALREADY_PAID
        if trade.state in (TradeState.CLOSED, TradeState.NOT_FOUND):
            return CloseOutcome.CLOSED
        raise ChannelError(
            refused.code, f"close refused while the trade is {trade.raw_state!r}", retryable=True
        )

    # --- refunds (退款) ----------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundTrade:
        """``alipay.trade.refund``, idempotent on ``out_request_no`` = ``refund_ref`` (a repeat
        answers ``fund_change`` N). Alipay sends refund notifies to the trade's notify_url:
        ``request.notify_url`` is not sent."""
        if request.amount.currency != CURRENCY:
            raise ChannelError("INVALID_PARAMETER", "Alipay refunds CNY only")
        biz: dict[str, Any] = {
            "out_trade_no": request.payment_ref,
            "refund_amount": to_yuan(request.amount.minor),
            "out_request_no": request.refund_ref,
        }
        if request.reason:
            biz["refund_reason"] = request.reason[:MAX_REASON_CHARS]
        try:
            node = self._call(REFUND, biz)
        except AlipayApiError as exc:
            retryable = exc.retryable or exc.code in RETRYABLE_REFUND_CODES
            raise ChannelError(exc.code, exc.message, retryable=retryable) from exc
        done = refund_from_answer(node, request.refund_ref, self.account)
        if done is not None:
            return done
        accepted = RefundTrade(
            request.refund_ref,
            RefundState.PROCESSING,  # accepted; the refund query has not said more
            payment_ref=opt_str(node, "out_trade_no"),
            raw_state=f"fund_change={str(node.get('fund_change'))[:8]}",
            merchant_id=self.account.merchant_id,
        )
        try:
            found = self.query_refund(request.refund_ref, request.payment_ref)
        except ChannelError:
            return accepted
        return accepted if found.state is RefundState.NOT_FOUND else found

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade:
        biz = {
            "out_trade_no": payment_ref,
            "out_request_no": refund_ref,
            "query_options": ["gmt_refund_pay"],
        }
        try:
            node = self._call(REFUND_QUERY, biz)
        except AlipayApiError as exc:
            if exc.code == TRADE_NOT_EXIST:
                return RefundTrade(refund_ref, RefundState.NOT_FOUND, raw_state=exc.code)
            raise
        return refund_from_query(node, refund_ref, self.account)

    # --- notifies (异步通知) ------------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback | RefundCallback:
        """Verify the form's RSA2 signature with the Alipay public key. What cannot be read as
        a signed form is BAD_SIGNATURE; a signed one that is no trade_status_sync notify is
        MALFORMED. A notify with refund fields is a refund's (RefundCallback)."""
        try:
            form = read_form(body)
            self._client.verify_notify(form)
        except (ValueError, signing.SignatureError) as exc:
            raise CallbackRejected(str(exc), CallbackRefusal.BAD_SIGNATURE) from exc
        notify_id = notify_id_of(form)
        if notify_id is None:
            raise CallbackRejected(
                "not a trade_status_sync notify with a notify_id", CallbackRefusal.MALFORMED
            )
        if is_refund_notify(form):
            return RefundCallback(notify_id, self._confirmed_refund(form))
        return Callback(notify_id, trade_from_notify(form))

    def _confirmed_refund(self, form: Mapping[str, str]) -> RefundTrade:
        """The refund the notify tells of, with its amount from the refund query."""
        told = refund_from_notify(form)
        app_id = opt_str(form, "app_id")
        if app_id != self.account.app_id:
            return replace(told, defect=f"a refund notify of app {str(app_id)[:32]!r}")
        ref, payment_ref = told.refund_ref, told.payment_ref
        if ref is None or payment_ref is None or told.merchant_id != self.account.merchant_id:
            return told  # the refund core refuses it: a field is missing, or another seller's
        try:
            found = self.query_refund(ref, payment_ref)
        except ChannelError as exc:
            raise CallbackRejected(
                f"refund {ref}: the refund query failed: {exc}", CallbackRefusal.RETRY_LATER
            ) from exc
        if found.state is not RefundState.SUCCESS or found.refund_ref != ref:
            raise CallbackRejected(
                f"refund {ref}: the refund query says {found.raw_state or found.state}",
                CallbackRefusal.RETRY_LATER,
            )
        return replace(
            told, amount=found.amount, succeeded_at=told.succeeded_at or found.succeeded_at
        )

    def callback_ack(self) -> CallbackReply:
        return CallbackReply(status=200, body=ACK, headers=TEXT)

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        """``fail``: Alipay retries whatever is not exactly ``success``. The reason stays in
        paygrid's log, not in the answer to an unauthenticated sender."""
        return CallbackReply(status=CALLBACK_REFUSALS[refusal], body=NACK, headers=TEXT)

    # --- trade bill (对账单) ------------------------------------------------------------------

    def download_bill(self, bill_date: date) -> bytes:
        """The 业务明细 bill zip of ``bill_date`` (a Beijing day), at most ``max_bill_bytes``.
        Not ready yet (before about 09:00 the next day) is the retryable
        ``isp.bill_not_exist``."""
        try:
            url = self._client.bill_download_url(bill_date, BILL_TYPE)
        except AlipayApiError as exc:
            _raise_unsigned(exc)
            if exc.sub_code == "isp.bill_not_exist":  # before about 09:00 the next day
                raise ChannelError(BILL_NOT_READY, exc.message, retryable=True) from exc
            raise
        return self._client.download(url)

    def parse_bill(self, content: bytes) -> list[BillLine]:
        return parse_bill_zip(content)

    # --- transport --------------------------------------------------------------------------

    def _call(
        self, method: str, biz: Mapping[str, Any], *, notify_url: str | None = None
    ) -> dict[str, Any]:
        """The verified answer node; a verified refusal as AlipayApiError, an unsigned one as
        a retryable ChannelError (never acted on)."""
        try:
            return self._client.call(method, biz, notify_url=notify_url)
        except AlipayApiError as exc:
            _raise_unsigned(exc)
            raise


def _raise_unsigned(exc: AlipayApiError) -> None:
    """An error answer Alipay did not sign may come from anyone on the way: retry, never act."""
    if not exc.verified:
        raise ChannelError(
            exc.code, f"unsigned error answer: {exc.message}", retryable=True
        ) from exc


def gateway_url(base_url: str) -> str:
    """``http://127.0.0.1:8102`` → ``http://127.0.0.1:8102/gateway.do`` (kept when given)."""
    base = base_url.rstrip("/")
    return base if base.endswith(GATEWAY_PATH) else base + GATEWAY_PATH


def build_adapter(credentials: Mapping[str, str], base_url: str) -> AlipayAdapter:
    """The channel registry's factory: the app's credentials and the gateway's base URL."""
    return AlipayAdapter(AlipayConfig.from_credentials(credentials, gateway_url(base_url)))
