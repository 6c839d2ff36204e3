"""UnionPay's online gateway as a :class:`~paygrid.channels.ports.ChannelAdapter` (银联全渠道).

On top of :class:`~paygrid.channels.unionpay.client.UnionPayClient` (signing, transport, answer
verification) it maps ACP 5.1.0 onto the port (docs/unionpay.md has the whole story):

- ``page``/``h5`` → a front-end consume (txnType 01/01, bizType 000201, channelType 07/08):
  no server call; the signed fields are a FORM the payer's browser posts to
  ``frontTransReq.do``; the browser comes back to ``frontUrl`` (the return URL), the result
  comes to ``backUrl``. ``native`` → a back-end QR consume (txnSubType 07): its ``qrCode``.
- ``orderId`` and ``txnTime`` are derived from our reference (parsing.py), so every later call
  names the transaction without any state kept here.
- ``payTimeout`` is the payment's ``expire_at``: UnionPay takes the payment until then only.
- **Close.** ACP has no close of an unpaid consume. ``close`` queries: paid is ALREADY_PAID;
  a consume UnionPay is still deciding (03/04/05) is a retryable refusal (nothing can be said
  yet); otherwise CLOSED. What that guarantees: after ``expire_at`` (= payTimeout) UnionPay
  takes no payment, so an expiry close is final. A merchant's close *before* expire_at
  cannot stop a payer who still holds the form or the QR: such a late payment reaches paygrid
  as a callback on a CLOSED payment, which the core refuses as ILLEGAL_TRANSITION (reported
  by ``paygrid check``), and the money must go back by hand.
- **Refunds** are always 退货 (txnType 04, with ``origQryId``), never the consume-revoke 31:
  04 is taken on the day of the consume too and for part of it, and one kind keeps one
  idempotent path (a retry on another day could not switch kinds under the same orderId).
  A revoke made elsewhere is still read (its notification, its ZM line).
- A refusal is acted on only when UnionPay signed it; 03/04/05 are "query later", never a
  refusal; 34 on a query is "not there (yet)", pending for a consume, NOT_FOUND for a refund.

Notification answers: any HTTP 200 stops UnionPay's retries (the body is not read); paygrid's
refusals are non-200 statuses per refusal, so UnionPay sends the notification again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from urllib.parse import parse_qsl

import httpx

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
from paygrid.channels.unionpay import signing, zm
from paygrid.channels.unionpay.banks import issuer_of
from paygrid.channels.unionpay.capabilities import CAPABILITIES
from paygrid.channels.unionpay.client import UnionPayApiError, UnionPayClient, UnionPayConfig
from paygrid.channels.unionpay.parsing import (
    BEIJING,
    CONSUME,
    CURRENCY,
    CURRENCY_CODE,
    FILE_TRANSFER,
    PENDING_CODES,
    QUERY,
    REFUND,
    REVOKE,
    beijing_text,
    notify_id_of,
    order_id_of,
    refund_from,
    refund_from_query,
    trade_from,
    trade_from_query,
    txn_time_of,
)

CHANNEL_TYPES = {"page": "07", "h5": "08", "native": "08"}  # 07 PC/pad, 08 mobile
GATEWAY_BIZ = "000201"  # B2C 网关支付
QUERY_BIZ = "000000"
QR_SUB_TYPE = "07"  # 二维码 consume (主扫): the answer carries qrCode
FRONT_SUB_TYPE = "01"  # 自助消费
BILL_FILE_TYPE = "00"
BILL_NOT_READY_CODES = frozenset({"98"})  # 文件不存在 (MODELLED: the code is unverified)
# MODELLED: UnionPay's clearing day ends about 23:00 Beijing (unverified); a revoke before it.
REVOKE_CUTOFF = "230000"  # hhmmss of the refund's txnTime
MAX_FORM_FIELDS = 80
MAX_FORM_BYTES = 64 * 1024
ACK = b"ok"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
CALLBACK_REFUSALS: Mapping[CallbackRefusal, int] = {
    CallbackRefusal.BAD_SIGNATURE: 401,
    CallbackRefusal.UNDECRYPTABLE: 400,  # UnionPay notifications are not encrypted
    CallbackRefusal.MALFORMED: 400,
    CallbackRefusal.UNKNOWN_PAYMENT: 404,
    CallbackRefusal.RETRY_LATER: 503,
}


class UnionPayAdapter:
    name = "unionpay"
    capabilities = CAPABILITIES

    def __init__(self, config: UnionPayConfig, http: httpx.Client | None = None) -> None:
        self._client = UnionPayClient(config, http)
        self.account = ChannelAccount(merchant_id=config.mer_id)

    # --- orders (消费/查询/关单) ---------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayerAction:
        channel_type = CHANNEL_TYPES.get(request.method)
        if channel_type is None:
            raise ChannelError("INVALID_PARAMETER", f"unsupported method {request.method!r}")
        if request.amount.currency != CURRENCY or request.amount.minor <= 0:
            raise ChannelError("INVALID_PARAMETER", "UnionPay takes positive CNY amounts only")
        fields = {
            **_names(request.payment_ref),
            "txnType": CONSUME,
            "txnSubType": FRONT_SUB_TYPE,
            "bizType": GATEWAY_BIZ,
            "channelType": channel_type,
            "txnAmt": str(request.amount.minor),
            "currencyCode": CURRENCY_CODE,
            "backUrl": request.notify_url,
            "frontUrl": request.return_url or "",
            "payTimeout": beijing_text(request.expire_at) if request.expire_at else "",
            "issInsCode": issuer_of(request.payer_bank) or "",
        }
        if request.method != "native":
            url, signed = self._client.front_form(fields)
            return PayerAction(PayerActionKind.FORM, url=url, fields=signed)
        fields.update(txnSubType=QR_SUB_TYPE, bizType=QUERY_BIZ, frontUrl="", issInsCode="")
        answer = self._call(self._client.back, fields)
        qr_code = answer.get("qrCode")
        if not qr_code or answer.get("orderId") != fields["orderId"]:
            raise ChannelError(
                "INVALID_RESPONSE", "the answer has no qrCode for us", retryable=True
            )
        return PayerAction(PayerActionKind.QR_CODE, content=qr_code)

    def query(self, payment_ref: str) -> Trade:
        """The consume as a fact; 34 (not there yet) and 03/04/05 are PENDING, never failed."""
        answer = self._query(payment_ref)
        return trade_from_query(answer, payment_ref, self.account)

    def close(self, payment_ref: str) -> CloseOutcome:
        """No close in ACP (module docstring): paid is ALREADY_PAID, in progress is a
        retryable refusal, else CLOSED (final once payTimeout = expire_at has passed)."""
        trade = self.query(payment_ref)
        if trade.state is TradeState.SUCCESS:
            return CloseOutcome.ALREADY_PAID
        if trade.state is None or trade.raw_state in PENDING_CODES:
            raise ChannelError(
                "TRADE_IN_PROGRESS",
                f"UnionPay is still deciding the consume ({trade.raw_state!r})",
                retryable=True,
            )
        return CloseOutcome.CLOSED

    def _query(self, ref: str) -> dict[str, str]:
        """A query answer (00), or a signed 34 (not found) answer as fields."""
        fields = {**_names(ref), "txnType": QUERY, "txnSubType": "00", "bizType": QUERY_BIZ}
        try:
            return self._client.query(fields)
        except UnionPayApiError as exc:
            if exc.verified and exc.not_found:
                return exc.fields
            raise _as_channel_error(exc) from exc

    # --- refunds (退货) ------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundTrade:
        """撤销 (31) of the whole amount on the consume's own day, else 退货 (04); idempotent on
        the refund's orderId + txnTime (both from ``refund_ref``): UnionPay answers a repeat
        with the same transaction. Accepted (00) is PROCESSING until the refund query or its
        notification says more."""
        if request.amount.currency != CURRENCY or request.amount.minor <= 0:
            raise ChannelError("INVALID_PARAMETER", "UnionPay refunds positive CNY amounts only")
        orig = request.channel_trade_no or self._paid_query_id(request.payment_ref)
        kind = _refund_kind(request)
        fields = {
            **_names(request.refund_ref),
            "txnType": kind,
            "txnSubType": "00",
            "bizType": GATEWAY_BIZ,
            "channelType": "07",
            "txnAmt": str(request.amount.minor),
            "currencyCode": CURRENCY_CODE,
            "origQryId": orig,
            "backUrl": request.notify_url,
        }
        answer = self._call(self._client.back, fields)
        accepted = RefundTrade(
            request.refund_ref,
            RefundState.PROCESSING,
            channel_refund_no=answer.get("queryId") or None,
            raw_state=f"{kind}:accepted",
            merchant_id=self.account.merchant_id,
        )
        try:
            found = self.query_refund(request.refund_ref, request.payment_ref)
        except ChannelError:
            return accepted
        return accepted if found.state is RefundState.NOT_FOUND else found

    def _paid_query_id(self, payment_ref: str) -> str:
        trade = self.query(payment_ref)
        if trade.state is TradeState.SUCCESS and trade.channel_trade_no:
            return trade.channel_trade_no
        retryable = trade.state is not TradeState.FAILED
        raise ChannelError(
            "TRADE_NOT_PAID", f"the consume is {trade.raw_state or 'not paid'}", retryable=retryable
        )

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade:
        """The refund by its own orderId/txnTime (refunds are not on the consume's query)."""
        return refund_from_query(self._query(refund_ref), refund_ref, self.account)

    # --- notifications (后台通知) ---------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback | RefundCallback:
        """Verify ``signPubKeyCert`` and the signature; dispatch by ``txnType``: 01 a consume,
        04/31 a refund or revoke. What cannot be read as a signed form is BAD_SIGNATURE."""
        try:
            form = read_form(body)
            self._client.verify_notification(form)
        except (ValueError, signing.SignatureError) as exc:
            raise CallbackRejected(str(exc), CallbackRefusal.BAD_SIGNATURE) from exc
        notify_id = notify_id_of(form)
        if notify_id is None:
            raise CallbackRejected("no txnType or queryId", CallbackRefusal.MALFORMED)
        code = form.get("respCode")
        if form["txnType"] == CONSUME:
            return Callback(notify_id, trade_from(form, code))
        if form["txnType"] in (REFUND, REVOKE):
            return RefundCallback(notify_id, refund_from(form, code))
        raise CallbackRejected(
            f"a txnType {form['txnType'][:4]!r} notification", CallbackRefusal.MALFORMED
        )

    def callback_ack(self) -> CallbackReply:
        return CallbackReply(status=200, body=ACK, headers=TEXT)

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        """Anything but 200 makes UnionPay send it again; the reason stays in paygrid's log."""
        return CallbackReply(status=CALLBACK_REFUSALS[refusal], body=b"fail", headers=TEXT)

    # --- the reconciliation file (对账文件) -------------------------------------------------------

    def download_bill(self, bill_date: date) -> bytes:
        """The zip of ``bill_date``'s ZM/ZME files through the file transfer (txnType 76).
        ``settleDate`` is MMDD: UnionPay keeps about a year of files."""
        fields = {
            "txnType": FILE_TRANSFER,
            "txnSubType": "01",
            "bizType": QUERY_BIZ,
            "txnTime": beijing_text(datetime.now(BEIJING)),
            "settleDate": f"{bill_date:%m%d}",
            "fileType": BILL_FILE_TYPE,
        }
        try:
            answer = self._client.file_transfer(fields)
        except UnionPayApiError as exc:
            if exc.verified and exc.resp_code in BILL_NOT_READY_CODES:
                raise ChannelError(BILL_NOT_READY, exc.message, retryable=True) from exc
            raise _as_channel_error(exc) from exc
        try:
            return zm.decode_file_content(answer.get("fileContent", ""))
        except ValueError as exc:
            raise ChannelError("INVALID_RESPONSE", str(exc), retryable=True) from exc

    def parse_bill(self, content: bytes) -> list[BillLine]:
        return zm.parse_zip(content)

    # --- transport ----------------------------------------------------------------------------

    def _call(
        self, send: Callable[[Mapping[str, str]], dict[str, str]], fields: Mapping[str, str]
    ) -> dict[str, str]:
        try:
            return send(fields)
        except UnionPayApiError as exc:
            raise _as_channel_error(exc) from exc


def _as_channel_error(exc: UnionPayApiError) -> ChannelError:
    """Unsigned, pending (03/04/05) or busy: retry (a pending back transaction is found by the
    query later); a signed refusal is final."""
    if not exc.verified:
        return ChannelError(exc.code, f"unsigned error answer: {exc.message}", retryable=True)
    return ChannelError(exc.code, exc.message, retryable=exc.retryable)


def _refund_kind(request: RefundRequest) -> str:
    """撤销 (31) when the whole amount goes back on the consume's own day before the clearing
    cut-off (no fee is charged on a revoked consume), else 退货 (04). Both times come from the
    refs (their txnTime), so a retry, even on another day, always sends the same kind."""
    try:
        paid, refunded = txn_time_of(request.payment_ref), txn_time_of(request.refund_ref)
    except ValueError as exc:
        raise ChannelError("INVALID_PARAMETER", str(exc)) from exc
    same_day = paid[:8] == refunded[:8] and refunded[8:] < REVOKE_CUTOFF
    whole = request.amount.minor == request.total.minor
    return REVOKE if same_day and whole else REFUND


def _names(ref: str) -> dict[str, str]:
    """``orderId`` and ``txnTime`` of the transaction ``ref`` names."""
    try:
        return {"orderId": order_id_of(ref), "txnTime": txn_time_of(ref)}
    except ValueError as exc:
        raise ChannelError("INVALID_PARAMETER", str(exc)) from exc


def read_form(body: bytes) -> dict[str, str]:
    """A notification's fields (URL-encoded, UTF-8); ValueError when it is not such a form."""
    if len(body) > MAX_FORM_BYTES:
        raise ValueError("the notification is too large")
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise ValueError("the notification is not a UTF-8 form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise ValueError(f"{name[:40]!r} appears twice")
        form[name] = value
    return form


def build_adapter(credentials: Mapping[str, str], base_url: str) -> UnionPayAdapter:
    """The channel registry's factory: the merchant's credentials and the gateway's base URL."""
    return UnionPayAdapter(UnionPayConfig.from_credentials(credentials, base_url))
