"""WeChat Pay API v3 as a :class:`~paygrid.channels.ports.ChannelAdapter` (微信支付通道): orders,
refunds, callbacks and bills in the port's words. The signed transport is transport.py; the
answers' parsing into facts is parsing.py."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

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
from paygrid.channels.wechatpay import refunds, signing
from paygrid.channels.wechatpay.bill import parse_trade_bill
from paygrid.channels.wechatpay.capabilities import CAPABILITIES
from paygrid.channels.wechatpay.parsing import (
    notification_resource,
    opt_str,
    refund_trade,
    rfc3339_china,
    trade_from_transaction,
)
from paygrid.channels.wechatpay.transport import WechatPayConfig, WechatPayTransport

# The AEAD associated_data WeChat Pay seals a payment notification's resource with (and its
# resource.original_type); a resource sealed for anything else is not a payment result.
TRANSACTION_RESOURCE = "transaction"

ORDER_PATHS = {
    "native": "/v3/pay/transactions/native",
    "jsapi": "/v3/pay/transactions/jsapi",
    "h5": "/v3/pay/transactions/h5",
    "app": "/v3/pay/transactions/app",
}
CALLBACK_REFUSALS: Mapping[CallbackRefusal, tuple[int, str]] = {
    CallbackRefusal.BAD_SIGNATURE: (401, "SIGN_ERROR"),
    CallbackRefusal.UNDECRYPTABLE: (400, "DECRYPT_ERROR"),
    CallbackRefusal.MALFORMED: (400, "PARAM_ERROR"),
    CallbackRefusal.UNKNOWN_PAYMENT: (404, "ORDER_NOT_EXIST"),
    CallbackRefusal.RETRY_LATER: (503, "SYSTEM_ERROR"),
}


class WechatPayAdapter:
    name = "wechatpay"
    capabilities = CAPABILITIES

    def __init__(self, config: WechatPayConfig, http: httpx.Client | None = None) -> None:
        self._config = config
        self._api = WechatPayTransport(config, http)
        self._private_key = signing.load_private_key(config.private_key)
        self.account = ChannelAccount(merchant_id=config.mchid, app_id=config.appid)

    # --- orders (下单/查单/关单) -------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayerAction:
        data = self._api.json(
            self._api.call("POST", _order_path(request), self._order_body(request))
        )
        return self._payer_action(request, data)

    def _payer_action(self, request: OrderRequest, data: Mapping[str, Any]) -> PayerAction:
        """Native: the QR's code_url; H5: a redirect to h5_url (back to return_url); JSAPI
        and App: the parameters their SDKs take, signed with our key (调起支付签名)."""
        key = {"native": "code_url", "h5": "h5_url"}.get(request.method, "prepay_id")
        value = opt_str(data, key)
        if value is None:
            raise ChannelError("PARAM_ERROR", f"the answer has no {key}")
        if request.method == "native":
            return PayerAction(PayerActionKind.QR_CODE, content=value)
        if request.method == "h5":
            back = (
                f"&redirect_url={quote(request.return_url, safe='')}" if request.return_url else ""
            )
            return PayerAction(PayerActionKind.REDIRECT, url=value + back)
        return PayerAction(PayerActionKind.APP_PARAMS, fields=self._sdk_params(request, value))

    def _sdk_params(self, request: OrderRequest, prepay_id: str) -> dict[str, str]:
        appid, stamp, nonce = self._config.appid, str(int(time.time())), signing.new_nonce()
        if request.method == "jsapi":
            package = f"prepay_id={prepay_id}"
            message = f"{appid}\n{stamp}\n{nonce}\n{package}\n".encode()
            return {
                "appId": appid,
                "timeStamp": stamp,
                "nonceStr": nonce,
                "package": package,
                "signType": "RSA",
                "paySign": signing.rsa_sign(self._private_key, message),
            }
        message = f"{appid}\n{stamp}\n{nonce}\n{prepay_id}\n".encode()
        return {
            "appid": appid,
            "partnerid": self._config.mchid,
            "prepayid": prepay_id,
            "package": "Sign=WXPay",
            "noncestr": nonce,
            "timestamp": stamp,
            "sign": signing.rsa_sign(self._private_key, message),
        }

    def _order_body(self, request: OrderRequest) -> dict[str, Any]:
        if request.amount.currency != "CNY":
            raise ChannelError("PARAM_ERROR", "WeChat Pay takes CNY only")
        body: dict[str, Any] = {
            "appid": self._config.appid,
            "mchid": self._config.mchid,
            "description": request.description,
            "out_trade_no": request.payment_ref,
            "notify_url": request.notify_url,
            "amount": {"total": request.amount.minor, "currency": "CNY"},
        }
        if request.expire_at is not None:
            body["time_expire"] = rfc3339_china(request.expire_at)
        if request.attach:
            body["attach"] = request.attach
        if request.method == "jsapi":
            if not request.payer_openid:
                raise ChannelError("PARAM_ERROR", "jsapi needs the payer's openid")
            body["payer"] = {"openid": request.payer_openid}
        if request.method == "h5":
            if not request.payer_ip:
                raise ChannelError("PARAM_ERROR", "h5 needs the payer's IP")
            body["scene_info"] = {"payer_client_ip": request.payer_ip, "h5_info": {"type": "Wap"}}
        elif request.payer_ip:
            body["scene_info"] = {"payer_client_ip": request.payer_ip}
        return body

    def query(self, payment_ref: str) -> Trade:
        """The channel's answer as a fact; the payment core checks it is the order it asked for,
        of our merchant and app, for the amount it holds."""
        mchid = _seg(self._config.mchid)
        path = f"/v3/pay/transactions/out-trade-no/{_seg(payment_ref)}?mchid={mchid}"
        try:
            response = self._api.call("GET", path)
        except ChannelError as exc:
            if exc.code == "ORDER_NOT_EXIST":
                return Trade(payment_ref, TradeState.NOT_FOUND, raw_state=exc.code)
            raise
        return trade_from_transaction(self._api.json(response))

    def close(self, payment_ref: str) -> CloseOutcome:
        path = f"/v3/pay/transactions/out-trade-no/{_seg(payment_ref)}/close"
        try:
            self._api.call("POST", path, {"mchid": self._config.mchid})
        except ChannelError as exc:
            if exc.code == "ORDERPAID":
                return CloseOutcome.ALREADY_PAID
            if exc.code == "ORDER_NOT_EXIST":
                return CloseOutcome.CLOSED  # never reached the channel: nothing to pay
            raise
        return CloseOutcome.CLOSED

    # --- refunds (退款) ----------------------------------------------------------------------

    def refund(self, request: RefundRequest) -> RefundTrade:
        body = refunds.refund_request_body(
            request.payment_ref,
            request.refund_ref,
            request.amount.minor,
            request.total.minor,
            request.amount.currency,
            request.reason,
            request.notify_url,
        )
        try:
            response = self._api.call("POST", refunds.REFUNDS_PATH, body)
        except ChannelError as exc:
            raise _refund_error(exc) from exc
        return refund_trade(refunds.refund_from_answer(self._api.json(response)))

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade:
        try:
            response = self._api.call("GET", refunds.refund_query_path(refund_ref))
        except ChannelError as exc:
            if exc.code == "RESOURCE_NOT_EXISTS":
                return RefundTrade(refund_ref, RefundState.NOT_FOUND, raw_state=exc.code)
            raise _refund_error(exc) from exc
        return refund_trade(refunds.refund_from_answer(self._api.json(response)))

    # --- callbacks (回调) -------------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback | RefundCallback:
        """Verify the signature, then open the resource: a forged callback is BAD_SIGNATURE, an
        authentic one that does not open UNDECRYPTABLE, one we cannot read MALFORMED. Missing
        transaction fields are left None in the trade for the payment core to refuse."""
        try:
            signing.verify_response(headers, body, self._key_for_callback)
        except signing.SignatureError as exc:
            raise CallbackRejected(str(exc), CallbackRefusal.BAD_SIGNATURE) from exc
        if refunds.is_refund_notification(body):
            opened = refunds.open_refund_notification(body, self._config.apiv3_key)
            return RefundCallback(opened.notify_id, refund_trade(opened.refund))
        try:
            notify_id, resource = notification_resource(json.loads(body))
            plain = signing.aead_decrypt(
                self._config.apiv3_key,
                resource["nonce"],
                resource["ciphertext"],
                resource["associated_data"],  # as sealed; checked below
            )
        except signing.DecryptError as exc:
            raise CallbackRejected(str(exc), CallbackRefusal.UNDECRYPTABLE) from exc
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise CallbackRejected(f"malformed callback: {exc}", CallbackRefusal.MALFORMED) from exc
        try:
            transaction = json.loads(plain)
        except (ValueError, RecursionError) as exc:
            raise CallbackRejected("resource is not JSON", CallbackRefusal.MALFORMED) from exc
        if not isinstance(transaction, dict):
            raise CallbackRejected("resource is not an object", CallbackRefusal.MALFORMED)
        trade = trade_from_transaction(transaction)
        sealed_for = (resource["associated_data"], resource.get("original_type"))
        if sealed_for != (TRANSACTION_RESOURCE, TRANSACTION_RESOURCE):
            defect = "resource sealed as associated_data={!r}, original_type={!r}".format(
                *sealed_for
            )
            trade = replace(trade, defect=defect[:200])
        return Callback(notify_id=notify_id, trade=trade)

    def _key_for_callback(self, serial: str) -> rsa.RSAPublicKey | None:
        try:
            return self._api.key_for_serial(serial)
        except ChannelError:  # cannot fetch certificates now: reject, WeChat will retry
            return None

    def callback_ack(self) -> CallbackReply:
        return CallbackReply(status=204)

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        """WeChat retries on any non-2xx; the body is the ``{code, message}`` its docs ask for.
        The status is exact per refusal (see docs/wechatpay.md)."""
        status, code = CALLBACK_REFUSALS[refusal]
        body = json.dumps({"code": code, "message": reason[:200]}, ensure_ascii=False)
        return CallbackReply(
            status=status,
            body=body.encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )

    # --- trade bill (交易账单) ---------------------------------------------------------------

    def download_bill(self, bill_date: date) -> bytes:
        """The ALL trade bill of ``bill_date`` (Beijing day), SHA1-checked against hash_value."""
        path = f"/v3/bill/tradebill?bill_date={bill_date.isoformat()}&bill_type=ALL"
        try:
            data = self._api.json(self._api.call("GET", path))
        except ChannelError as exc:
            if exc.code == "STATEMENT_CREATING":  # 账单生成中: out after about 10:00 the next day
                raise ChannelError(BILL_NOT_READY, exc.message, retryable=True) from exc
            raise
        url, hash_type, hash_value = (
            opt_str(data, k) for k in ("download_url", "hash_type", "hash_value")
        )
        if not url or not url.startswith(self._api.base + "/"):
            raise ChannelError("INVALID_RESPONSE", "download_url is not on the API host")
        if hash_type != "SHA1" or not hash_value:
            raise ChannelError("INVALID_RESPONSE", f"unsupported hash_type {hash_type!r}")
        content = self._api.download(url[len(self._api.base) :])
        if hashlib.sha1(content).hexdigest() != hash_value.lower():
            raise ChannelError(
                "BILL_HASH_MISMATCH", "bill does not match hash_value", retryable=True
            )
        return content

    def parse_bill(self, content: bytes) -> list[BillLine]:
        return parse_trade_bill(content)


# --- helpers ----------------------------------------------------------------------------------


def _order_path(request: OrderRequest) -> str:
    path = ORDER_PATHS.get(request.method)
    if path is None:
        raise ChannelError("PARAM_ERROR", f"unsupported method {request.method!r}")
    return path


def _seg(value: str) -> str:
    return quote(value, safe="")


def _refund_error(exc: ChannelError) -> ChannelError:
    """WeChat's refund error codes say which are worth the same call again."""
    retryable = exc.retryable or refunds.refund_error_retryable(exc.code)
    return ChannelError(exc.code, exc.message, retryable=retryable)


def build_adapter(credentials: Mapping[str, str], base_url: str) -> WechatPayAdapter:
    """The channel registry's factory: the merchant's credentials and the API base URL."""
    return WechatPayAdapter(WechatPayConfig.from_credentials(credentials, base_url))
