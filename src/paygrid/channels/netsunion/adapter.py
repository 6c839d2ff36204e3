"""NetsUnion (网联) as a :class:`~paygrid.channels.ports.ChannelAdapter` and
:class:`~paygrid.channels.ports.AgreementChannel` (协议支付).

- Agreements: ``request_agreement`` sends epcc.101 TrxCtgy 0201 with the account's details
  encrypted (the bank texts the payer a code); ``confirm_agreement`` sends 0202 with the code
  (AuthMsg) and gets the agreement number (SgnNo). Both idempotent on our agreement ref (TrxId).
- ``create_order`` (method ``agreement``) sends epcc.201: a debit of the payer's account under
  SgnNo, idempotent on ``payment_ref`` (TrxId). The answer is "processing" (BizStsCd 02): the
  payer has nothing to do (PayerActionKind.WAIT); the result comes as a notification (epcc.711)
  or from a query (epcc.411).
- ``create_order`` (method ``page``, 网关支付, MODELLED: ``page.py``) sends epcc.211: the order
  registered at the platform, idempotent on ``payment_ref``; the answer's signed page fields go
  to the payer as a FORM posted to the payer bank's pay page. The result comes as for debits.
- ``close``: a debit, once sent, cannot be revoked (no such message is known); close answers
  CLOSED only when the platform has no debit of that ref (nothing was sent) or the bank refused
  it, ALREADY_PAID when it succeeded, and a retryable ChannelError while the bank is deciding.
  An unpaid gateway order is closed with epcc.213 (the bank page refuses it from then on).
- Refunds (epcc.301) are asynchronous too: PROCESSING, then a notification or a query.
- A business answer is acted on only when the platform signed it; an unsigned or unreadable
  answer is a retryable ChannelError.

Notification answers: a signed epcc.712 with SysRtnCd 00000000 stops the platform's retries;
anything else is retried. Everything past the observed envelope is MODELLED (docs/netsunion.md).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from datetime import UTC, date, datetime

import httpx

from paygrid.channels.netsunion import crypto, page, wire
from paygrid.channels.netsunion.banks import bank_id
from paygrid.channels.netsunion.bill import file_name, parse_bill_zip
from paygrid.channels.netsunion.capabilities import CAPABILITIES
from paygrid.channels.netsunion.client import NetsUnionClient, NetsUnionConfig, NetsUnionError
from paygrid.channels.netsunion.credentials import GATEWAY_PATH
from paygrid.channels.netsunion.parsing import (
    CURRENCY,
    agreement_from,
    business,
    is_not_found,
    refund_from,
    trade_from,
)
from paygrid.channels.ports import (
    BILL_NOT_READY,
    AgreementRequest,
    AgreementResult,
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

METHOD = "agreement"
MAX_DESCRIPTION_CHARS = 64
MAX_REASON_CHARS = 64
BILL_NOT_READY_CODE = "NU4041"  # MODELLED: the day's clearing files are not out yet
ACCOUNT_TYPE_DEBIT = "00"  # SgnAcctTp: a bank debit account (observed value, meaning inferred)
XML = {"Content-Type": wire.CONTENT_TYPE}
CALLBACK_REFUSALS: Mapping[CallbackRefusal, tuple[int, str]] = {
    CallbackRefusal.BAD_SIGNATURE: (401, wire.SYS_SIGNATURE),
    CallbackRefusal.UNDECRYPTABLE: (400, wire.SYS_FORMAT),
    CallbackRefusal.MALFORMED: (400, wire.SYS_FORMAT),
    CallbackRefusal.UNKNOWN_PAYMENT: (404, wire.SYS_FORMAT),
    CallbackRefusal.RETRY_LATER: (503, wire.SYS_BUSY),
}


class NetsUnionAdapter:
    name = "netsunion"
    capabilities = CAPABILITIES

    def __init__(self, config: NetsUnionConfig, http: httpx.Client | None = None) -> None:
        self._client = NetsUnionClient(config, http)
        self._config = config
        self.account = ChannelAccount(merchant_id=config.member_id)

    def _now(self) -> str:
        return wire.beijing_text(datetime.now(UTC))

    # --- agreements (协议签约) -----------------------------------------------------------------

    def request_agreement(self, request: AgreementRequest) -> AgreementResult:
        bank = bank_id(request.bank)
        if bank is None:
            raise ChannelError("INVALID_PARAMETER", f"no NetsUnion id for bank {request.bank!r}")
        body: wire.Node = {
            "SgnInf": {
                "SgnAcctIssrId": bank,
                "SgnAcctTp": ACCOUNT_TYPE_DEBIT,
                "SgnAcctId": wire.Secret(request.account_no),
                "SgnAcctNm": wire.Secret(request.holder_name),
                "IDTp": request.id_type,
                "IDNo": wire.Secret(request.id_no),
                "MobNo": wire.Secret(request.mobile),
            },
            "TrxInf": {
                "TrxCtgy": wire.AGREEMENT_ASK,
                "TrxId": request.agreement_ref,
                "TrxDtTm": self._now(),
            },
            "InstgInf": {
                "InstgId": self.account.merchant_id,
                "InstgAcct": self._config.reserve_account,
            },
        }
        return self._agreement(body, request.agreement_ref, confirming=False)

    def confirm_agreement(self, agreement_ref: str, sms_code: str) -> AgreementResult:
        if not (sms_code.isascii() and sms_code.isdigit() and 4 <= len(sms_code) <= 8):
            raise ChannelError("INVALID_PARAMETER", "the SMS code is 4 to 8 digits")
        body: wire.Node = {
            "TrxInf": {
                "TrxCtgy": wire.AGREEMENT_CONFIRM,
                "TrxId": agreement_ref,
                "TrxDtTm": self._now(),
                "AuthMsg": sms_code,
            },
            "InstgInf": {"InstgId": self.account.merchant_id},
        }
        return self._agreement(body, agreement_ref, confirming=True)

    def _agreement(self, body: wire.Node, ref: str, *, confirming: bool) -> AgreementResult:
        answer = self._call(wire.AGREEMENT, body)
        try:
            return agreement_from(answer, ref, confirming)
        except ValueError as exc:
            raise ChannelError("INVALID_RESPONSE", str(exc), retryable=True) from exc

    # --- debits (协议支付/查询/关闭) -----------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayerAction:
        if request.method not in (METHOD, page.METHOD):
            raise ChannelError("INVALID_PARAMETER", f"unsupported method {request.method!r}")
        if request.amount.currency != CURRENCY:
            raise ChannelError("INVALID_PARAMETER", "NetsUnion debits CNY only")
        if request.method == page.METHOD:
            return self._page_order(request)
        bank = bank_id(request.payer_bank or "")
        if bank is None or not request.agreement_no:
            raise ChannelError("INVALID_PARAMETER", "a debit needs the payer's bank and agreement")
        body: wire.Node = {
            "PyerInf": {"PyerAcctIssrId": bank, "SgnNo": request.agreement_no},
            "PyeeInf": {
                "PyeeAcctIssrId": self.account.merchant_id,
                "PyeeAcctId": self._config.reserve_account,
            },
            "TrxInf": {
                "TrxCtgy": wire.DEBIT_CATEGORY,
                "TrxId": request.payment_ref,
                "TrxDtTm": self._now(),
                "TrxAmt": wire.amount_text(request.amount.minor),
                "NtfyUrl": request.notify_url,  # MODELLED: the real platform notifies a fixed 前置
            },
            "OrdrInf": {
                "OrdrId": request.payment_ref,
                "OrdrDesc": request.description[:MAX_DESCRIPTION_CHARS],
            },
            "InstgInf": {"InstgId": self.account.merchant_id},
        }
        answer = self._call(wire.DEBIT, body)
        status, code, description = business(answer)
        if answer.text("TrxInf/TrxId") != request.payment_ref:
            raise ChannelError(
                "INVALID_RESPONSE", "the answer is about another debit", retryable=True
            )
        if status == wire.BIZ_FAILED and answer.text("TrxInf/TrxStatus") != wire.BIZ_FAILED:
            raise ChannelError(code or "DEBIT_REFUSED", description)  # refused, not sent
        # processing, done, or declined by the bank: the payment learns which by notify/query
        return PayerAction(PayerActionKind.WAIT, content=answer.text("TrxInf/SysTrxId"))

    def _page_order(self, request: OrderRequest) -> PayerAction:
        """A gateway payment (网关支付): registered at the platform, paid at the bank's page."""
        bank = bank_id(request.payer_bank or "")
        if bank is None:
            raise ChannelError("INVALID_PARAMETER", "a gateway payment needs the payer's bank")
        now = datetime.now(UTC)
        page.checked_request(request, now)
        member, reserve = self.account.merchant_id, self._config.reserve_account
        answer = self._call(wire.GATEWAY, page.order_body(request, bank, member, reserve, now))
        status, code, description = business(answer)
        if answer.text("TrxInf/TrxId") != request.payment_ref:
            raise ChannelError(
                "INVALID_RESPONSE", "the answer is about another order", retryable=True
            )
        state = answer.text("TrxInf/TrxStatus")
        if status == wire.BIZ_FAILED and state is None:
            raise ChannelError(code or "ORDER_REFUSED", description)  # refused, not registered
        if state == wire.TRX_CLOSED:
            raise ChannelError("ORDER_CLOSED", "the gateway order was closed")
        fields = page.page_fields(answer, request, bank, member)
        url = answer.text("PageInf/PageUrl") or ""
        if not url.startswith(("http://", "https://")) or len(url) > page.MAX_URL_CHARS:
            raise ChannelError("INVALID_RESPONSE", "no bank page in the answer", retryable=True)
        if not page.verify_fields(self._client.platform_key, fields):
            raise ChannelError(
                "INVALID_RESPONSE_SIGNATURE", "the page fields are not the platform's",
                retryable=True,
            )  # fmt: skip
        return PayerAction(PayerActionKind.FORM, url=url, fields=fields)

    def query(self, payment_ref: str) -> Trade:
        answer = self._query(payment_ref)
        if answer is None:
            return Trade(payment_ref, TradeState.NOT_FOUND, raw_state="NU4004")
        return trade_from(answer, "OriTrxInf", self.account.merchant_id)

    def close(self, payment_ref: str) -> CloseOutcome:
        """No message revokes a debit (see the module's docstring); an unpaid gateway order
        is closed with epcc.213."""
        answer = self._query(payment_ref)
        if answer is None:
            return CloseOutcome.CLOSED
        trade = trade_from(answer, "OriTrxInf", self.account.merchant_id)
        if trade.state in (TradeState.FAILED, TradeState.CLOSED):
            return CloseOutcome.CLOSED
        if trade.state is TradeState.SUCCESS:
            return CloseOutcome.ALREADY_PAID
        if answer.text("OriTrxInf/OriMsgTp") == wire.GATEWAY:
            return self._close_page(payment_ref)
        raise ChannelError(
            "DEBIT_IN_PROGRESS", "the bank is deciding the debit; close after", retryable=True
        )

    def _close_page(self, payment_ref: str) -> CloseOutcome:
        body = {
            "OriTrxInf": {"OriTrxId": payment_ref},
            "InstgInf": {"InstgId": self.account.merchant_id},
        }
        answer = self._call(wire.GATEWAY_CLOSE, body)
        status, code, description = business(answer)
        outcome = page.close_outcome(answer.text("OriTrxInf/TrxStatus"))
        if status != wire.BIZ_SUCCESS or answer.text("OriTrxInf/TrxId") != payment_ref:
            raise ChannelError(
                code or "INVALID_RESPONSE", description or "bad close answer", retryable=True
            )
        if outcome is None:
            raise ChannelError("INVALID_RESPONSE", "the order is still open", retryable=True)
        return outcome

    def _query(self, trx_id: str) -> wire.Message | None:
        body = {
            "OriTrxInf": {"OriTrxId": trx_id},
            "InstgInf": {"InstgId": self.account.merchant_id},
        }
        answer = self._call(wire.QUERY, body)
        if is_not_found(answer):
            return None
        status, code, description = business(answer)
        if status != wire.BIZ_SUCCESS or answer.text("OriTrxInf/TrxId") != trx_id:
            raise ChannelError(
                code or "INVALID_RESPONSE", description or "bad query answer", retryable=True
            )
        return answer

    # --- refunds (退款) ------------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundTrade:
        if request.amount.currency != CURRENCY:
            raise ChannelError("INVALID_PARAMETER", "NetsUnion refunds CNY only")
        body: wire.Node = {
            "TrxInf": {
                "TrxCtgy": wire.REFUND_CATEGORY,
                "TrxId": request.refund_ref,
                "TrxDtTm": self._now(),
                "TrxAmt": wire.amount_text(request.amount.minor),
                "NtfyUrl": request.notify_url,
                "Rsn": (request.reason or "")[:MAX_REASON_CHARS] or None,
            },
            "OriTrxInf": {
                "OriTrxId": request.payment_ref,
                "OriTrxAmt": wire.amount_text(request.total.minor),
            },
            "InstgInf": {"InstgId": self.account.merchant_id},
        }
        answer = self._call(wire.REFUND, body)
        status, code, description = business(answer)
        if status == wire.BIZ_FAILED and answer.text("TrxInf/TrxStatus") is None:
            retryable = code in ("NU5001",)  # MODELLED: the reserve is short for now
            raise ChannelError(code or "REFUND_REFUSED", description, retryable=retryable)
        found = refund_from(answer, "TrxInf", self.account.merchant_id)
        if found.refund_ref != request.refund_ref:
            raise ChannelError(
                "INVALID_RESPONSE", "the answer is about another refund", retryable=True
            )
        return found

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade:
        answer = self._query(refund_ref)
        if answer is None:
            return RefundTrade(refund_ref, RefundState.NOT_FOUND, raw_state="NU4004")
        return refund_from(answer, "OriTrxInf", self.account.merchant_id)

    # --- notifications (交易结果通知) ----------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback | RefundCallback:
        try:
            message = self._client.read_notification(headers, body)
        except (wire.WireError, PermissionError) as exc:
            raise CallbackRejected(str(exc), CallbackRefusal.BAD_SIGNATURE) from exc
        notify_id = message.text("NtfyInf/NtfyId")
        kind = message.text("OriTrxInf/OriMsgTp")
        if message.msg_tp != wire.NOTIFY or not wire.is_id(notify_id) or notify_id is None:
            raise CallbackRejected("not a result notification", CallbackRefusal.MALFORMED)
        merchant = message.text("InstgInf/InstgId")
        if kind == wire.REFUND:
            return RefundCallback(notify_id, refund_from(message, "OriTrxInf", merchant))
        if kind in (wire.DEBIT, wire.GATEWAY):
            return Callback(notify_id, trade_from(message, "OriTrxInf", merchant))
        raise CallbackRejected("a notification of no debit or refund", CallbackRefusal.MALFORMED)

    def callback_ack(self) -> CallbackReply:
        return CallbackReply(status=200, body=self._client.ack(), headers=XML)

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        """A signed refusal: the platform retries. The reason stays in paygrid's log."""
        status, code = CALLBACK_REFUSALS[refusal]
        return CallbackReply(status=status, body=self._client.nack(code, "拒绝"), headers=XML)

    # --- clearing files (清算文件) -------------------------------------------------------------

    def download_bill(self, bill_date: date) -> bytes:
        """The day's clearing files, one per batch, in one zip; each file's SM3 digest is the
        one the platform signed in its answer."""
        body = {
            "FileInf": {"SttlmDt": bill_date.isoformat()},
            "InstgInf": {"InstgId": self.account.merchant_id},
        }
        answer = self._call(wire.FILES, body)
        status, code, description = business(answer)
        if status != wire.BIZ_SUCCESS:
            if code == BILL_NOT_READY_CODE:
                raise ChannelError(BILL_NOT_READY, description, retryable=True)
            raise ChannelError(code or "INVALID_RESPONSE", description)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in answer.all("FileList/FileInf"):
                batch, url, digest = (
                    entry.findtext(n) or "" for n in ("BatchId", "FileUrl", "FileDgst")
                )
                if not wire.is_id(batch) or not url.startswith(("http://", "https://")):
                    raise ChannelError(
                        "INVALID_RESPONSE", "a file entry without batch or url", retryable=True
                    )
                content = self._client.download(url, digest)
                archive.writestr(file_name(self.account.merchant_id, bill_date, batch), content)
        return out.getvalue()

    def parse_bill(self, content: bytes) -> list[BillLine]:
        return parse_bill_zip(content)

    # --- transport --------------------------------------------------------------------------

    def _call(self, msg_tp: str, body: wire.Node) -> wire.Message:
        try:
            return self._client.call(msg_tp, body)
        except NetsUnionError:
            raise
        except crypto.CryptoError as exc:
            raise ChannelError("INVALID_RESPONSE", str(exc), retryable=True) from exc


def gateway_url(base_url: str) -> str:
    """``http://127.0.0.1:8104`` -> ``http://127.0.0.1:8104/epcc/gateway`` (kept when given)."""
    base = base_url.rstrip("/")
    return base if base.endswith(GATEWAY_PATH) else base + GATEWAY_PATH


def build_adapter(credentials: Mapping[str, str], base_url: str) -> NetsUnionAdapter:
    """The channel registry's factory: the member's credentials and the platform's base URL."""
    return NetsUnionAdapter(NetsUnionConfig.from_credentials(credentials, gateway_url(base_url)))
