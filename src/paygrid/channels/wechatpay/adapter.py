"""WeChat Pay API v3 as a :class:`~paygrid.channels.ports.ChannelAdapter` (微信支付通道).

Every request is signed with the merchant API key; every answer except the bill stream is
verified, either with the WeChat Pay public key (微信支付公钥 mode, ``Wechatpay-Serial`` =
``PUB_KEY_ID_…``) or with platform certificates (平台证书 mode) fetched from ``/v3/certificates``
and decrypted with the APIv3 key. Network trouble and 5xx are retryable ``ChannelError``; 4xx are
final with WeChat's error code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid import __version__
from paygrid.channels.ports import (
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

DEFAULT_BASE_URL = "https://api.mch.weixin.qq.com"
CERT_REFRESH_SECONDS = 60.0  # an unknown serial refetches certificates at most this often
MAX_BILL_BYTES = 1 << 30
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


@dataclass(frozen=True, slots=True)
class WechatPayConfig:
    """A merchant's WeChat Pay access. Public-key mode when ``public_key``/``public_key_id`` are
    set, else platform-certificate mode."""

    mchid: str
    appid: str
    private_key: str  # 商户API私钥 PEM
    cert_serial_no: str  # 商户API证书序列号
    apiv3_key: str  # APIv3密钥, 32 chars
    base_url: str = DEFAULT_BASE_URL
    public_key: str | None = None  # 微信支付公钥 PEM
    public_key_id: str | None = None  # PUB_KEY_ID_…
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_bill_bytes: int = MAX_BILL_BYTES

    def __post_init__(self) -> None:
        if (self.public_key is None) != (self.public_key_id is None):
            raise ValueError("public_key and public_key_id go together")
        if len(self.apiv3_key.encode("utf-8")) != 32:
            raise ValueError("apiv3_key must be 32 bytes")

    @property
    def uses_certificates(self) -> bool:
        return self.public_key is None

    @classmethod
    def from_credentials(
        cls, creds: Mapping[str, str], base_url: str, *, mode: str = "public_key"
    ) -> WechatPayConfig:
        """From the merchant-platform credentials (the sandbox's ``/sandbox/credentials``).

        ``mode`` "public_key" (default) or "certificate" (ignore the public key, use 平台证书).
        """
        if mode not in ("public_key", "certificate"):
            raise ValueError(f"unknown verification mode {mode!r}")
        public = mode == "public_key"
        return cls(
            mchid=creds["mchid"],
            appid=creds["appid"],
            private_key=creds["private_key"],
            cert_serial_no=creds["cert_serial_no"],
            apiv3_key=creds["apiv3_key"],
            base_url=base_url,
            public_key=creds["public_key"] if public else None,
            public_key_id=creds["public_key_id"] if public else None,
        )


class WechatPayAdapter:
    name = "wechatpay"
    capabilities = CAPABILITIES

    def __init__(self, config: WechatPayConfig, http: httpx.Client | None = None) -> None:
        self._config = config
        self._base = config.base_url.rstrip("/")
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
        )
        self._private_key = signing.load_private_key(config.private_key)
        self._public_key = signing.load_public_key(config.public_key) if config.public_key else None
        self._certs: dict[int, rsa.RSAPublicKey] = {}
        self._certs_lock = threading.Lock()
        self._certs_fetched = float("-inf")
        self.account = ChannelAccount(merchant_id=config.mchid, app_id=config.appid)

    # --- orders (下单/查单/关单) -------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayerAction:
        data = self._json(self._call("POST", _order_path(request), self._order_body(request)))
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
            response = self._call("GET", path)
        except ChannelError as exc:
            if exc.code == "ORDER_NOT_EXIST":
                return Trade(payment_ref, TradeState.NOT_FOUND, raw_state=exc.code)
            raise
        return trade_from_transaction(self._json(response))

    def close(self, payment_ref: str) -> CloseOutcome:
        path = f"/v3/pay/transactions/out-trade-no/{_seg(payment_ref)}/close"
        try:
            self._call("POST", path, {"mchid": self._config.mchid})
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
            response = self._call("POST", refunds.REFUNDS_PATH, body)
        except ChannelError as exc:
            raise _refund_error(exc) from exc
        return refund_trade(refunds.refund_from_answer(self._json(response)))

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade:
        try:
            response = self._call("GET", refunds.refund_query_path(refund_ref))
        except ChannelError as exc:
            if exc.code == "RESOURCE_NOT_EXISTS":
                return RefundTrade(refund_ref, RefundState.NOT_FOUND, raw_state=exc.code)
            raise _refund_error(exc) from exc
        return refund_trade(refunds.refund_from_answer(self._json(response)))

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
            return self._key_for_serial(serial)
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
        data = self._json(self._call("GET", path))
        url, hash_type, hash_value = (
            opt_str(data, k) for k in ("download_url", "hash_type", "hash_value")
        )
        if not url or not url.startswith(self._base + "/"):
            raise ChannelError("INVALID_RESPONSE", "download_url is not on the API host")
        if hash_type != "SHA1" or not hash_value:
            raise ChannelError("INVALID_RESPONSE", f"unsupported hash_type {hash_type!r}")
        content = self._download(url[len(self._base) :])
        if hashlib.sha1(content).hexdigest() != hash_value.lower():
            raise ChannelError(
                "BILL_HASH_MISMATCH", "bill does not match hash_value", retryable=True
            )
        return content

    def _download(self, path: str) -> bytes:
        request = self._request("GET", path, b"")
        limit = self._config.max_bill_bytes
        try:
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 300:
                    response.read()
                    self._raise_for_status(response)
                content = _read_bounded(response, limit)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        if content[:2] == b"\x1f\x8b":  # served gzipped although not asked: unpack, bounded
            content = _gunzip_bounded(content, limit)
        return content

    def parse_bill(self, content: bytes) -> list[BillLine]:
        return parse_trade_bill(content)

    # --- transport --------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes) -> httpx.Request:
        url = httpx.URL(self._base + path)
        target = url.raw_path.decode("ascii")  # what goes on the wire is what gets signed
        headers = {
            "Authorization": signing.build_authorization(
                method,
                target,
                body,
                mchid=self._config.mchid,
                serial_no=self._config.cert_serial_no,
                private_key=self._private_key,
            ),
            "Accept": "application/json",
            "User-Agent": f"paygrid/{__version__}",
        }
        if body:
            headers["Content-Type"] = "application/json"
        if self._config.public_key_id:  # asks WeChat to sign answers with the public key
            headers["Wechatpay-Serial"] = self._config.public_key_id
        return httpx.Request(method, url, headers=headers, content=body)

    def _send(self, method: str, path: str, payload: Mapping[str, Any] | None) -> httpx.Response:
        body = b"" if payload is None else _json_bytes(payload)
        try:
            return self._http.send(self._request(method, path, body))
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc

    def _call(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """Send, verify the answer's signature, and turn errors into ChannelError."""
        response = self._send(method, path, payload)
        if response.status_code >= 500 or response.status_code == 429:
            self._raise_for_status(response)
        try:
            signing.verify_response(response.headers, response.content, self._key_for_serial)
        except signing.SignatureError as exc:
            code, _ = _error_of(response)
            raise ChannelError(
                "INVALID_RESPONSE_SIGNATURE",
                f"HTTP {response.status_code} {code}: {exc}",
                retryable=True,
            ) from exc
        if response.status_code >= 300:
            self._raise_for_status(response)
        return response

    @staticmethod
    def _raise_for_status(response: httpx.Response) -> None:
        code, message = _error_of(response)
        retryable = response.status_code >= 500 or response.status_code == 429
        raise ChannelError(code, message, retryable=retryable)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise ChannelError("INVALID_RESPONSE", "answer is not JSON", retryable=True) from exc
        if not isinstance(data, dict):
            raise ChannelError("INVALID_RESPONSE", "answer is not a JSON object", retryable=True)
        return data

    # --- platform keys (平台证书 / 微信支付公钥) ---------------------------------------------

    def _key_for_serial(self, serial: str) -> rsa.RSAPublicKey | None:
        if self._public_key is not None and serial == self._config.public_key_id:
            return self._public_key
        if not self._config.uses_certificates:
            return None
        try:
            number = int(serial, 16)
        except ValueError:
            return None
        with self._certs_lock:
            key = self._certs.get(number)
            stale = time.monotonic() - self._certs_fetched >= CERT_REFRESH_SECONDS
            if key is None and (stale or not self._certs):
                self._certs = self._fetch_certificates()
                key = self._certs.get(number)
            return key

    def _fetch_certificates(self) -> dict[int, rsa.RSAPublicKey]:
        """Download 平台证书, decrypt with the APIv3 key, then verify the answer with them."""
        self._certs_fetched = time.monotonic()
        response = self._send("GET", "/v3/certificates", None)
        if response.status_code != 200:
            self._raise_for_status(response)
        try:
            certs = _decrypt_certificates(self._json(response), self._config.apiv3_key)
            signing.verify_response(response.headers, response.content, lambda s: _by_hex(certs, s))
        except (
            signing.SignatureError,
            signing.DecryptError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            raise ChannelError("INVALID_CERTIFICATES", str(exc), retryable=True) from exc
        return certs


# --- helpers ----------------------------------------------------------------------------------


def _decrypt_certificates(data: Mapping[str, Any], apiv3_key: str) -> dict[int, rsa.RSAPublicKey]:
    now = datetime.now(UTC)
    certs: dict[int, rsa.RSAPublicKey] = {}
    for item in data["data"]:
        enc = item["encrypt_certificate"]
        pem = signing.aead_decrypt(
            apiv3_key, enc["nonce"], enc["ciphertext"], enc["associated_data"]
        )
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        key = cert.public_key()
        valid = cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        if valid and isinstance(key, rsa.RSAPublicKey):
            certs[cert.serial_number] = key
    if not certs:
        raise ValueError("no valid platform certificate")
    return certs


def _by_hex(certs: Mapping[int, rsa.RSAPublicKey], serial: str) -> rsa.RSAPublicKey | None:
    try:
        return certs.get(int(serial, 16))
    except ValueError:
        return None


def _order_path(request: OrderRequest) -> str:
    path = ORDER_PATHS.get(request.method)
    if path is None:
        raise ChannelError("PARAM_ERROR", f"unsupported method {request.method!r}")
    return path


def _seg(value: str) -> str:
    return quote(value, safe="")


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        data = json.loads(response.content)
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            return data["code"], str(data.get("message", ""))
    except ValueError:
        pass
    return f"HTTP_{response.status_code}", response.reason_phrase


def _refund_error(exc: ChannelError) -> ChannelError:
    """WeChat's refund error codes say which are worth the same call again."""
    retryable = exc.retryable or refunds.refund_error_retryable(exc.code)
    return ChannelError(exc.code, exc.message, retryable=retryable)


def _network_error(exc: httpx.HTTPError) -> ChannelError:
    code = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "NETWORK_ERROR"
    return ChannelError(code, f"{type(exc).__name__}: {exc}", retryable=True)


def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ChannelError("BILL_TOO_LARGE", f"bill exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip_bounded(content: bytes, limit: int) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(content)) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ChannelError("BILL_TOO_LARGE", f"bill exceeds {limit} bytes")
    return data


def build_adapter(credentials: Mapping[str, str], base_url: str) -> WechatPayAdapter:
    """The channel registry's factory: the merchant's credentials and the API base URL."""
    return WechatPayAdapter(WechatPayConfig.from_credentials(credentials, base_url))
