"""A thin client of the Alipay open platform gateway (支付宝开放平台 ``gateway.do``).

It builds and signs requests (common parameters + ``biz_content``), posts them with explicit
timeouts, verifies the answer's signature over the raw response node and returns that node; it
verifies asynchronous notifies and return parameters, builds the page/wap pay redirect or
auto-submitted form, and downloads the bill zip with a bound on its size. It decides nothing
about payments: paygrid's adapter maps the nodes onto the channel port.

Errors are :class:`ChannelError`: :class:`AlipayApiError` for an answer whose ``code`` is not
10000 (``code`` is Alipay's ``sub_code`` when there is one), ``TIMEOUT``/``NETWORK_ERROR`` and
``INVALID_RESPONSE*`` (all retryable) for the rest.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from paygrid import __version__
from paygrid.channels.alipay import signing
from paygrid.channels.alipay.bill import BEIJING, TIME_FORMAT
from paygrid.channels.ports import ChannelError
from paygrid.kernel.money import format_major, parse_major

DEFAULT_GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
SUCCESS = "10000"
PAGE_PAY = "alipay.trade.page.pay"
WAP_PAY = "alipay.trade.wap.pay"
BILL_QUERY = "alipay.data.dataservice.bill.downloadurl.query"
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_BILL_BYTES = 64 * 1024 * 1024
RETRYABLE_CODES = frozenset({"20000"})  # Service Currently Unavailable
RETRYABLE_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR"})


def to_yuan(fen: int) -> str:
    """Fen as Alipay's amount string: 1234 → ``"12.34"``."""
    return format_major(fen, "CNY")


def to_fen(yuan: str) -> int:
    """An Alipay amount string parsed exactly: ``"12.34"`` → 1234 (MoneyError when not money)."""
    return parse_major(yuan, "CNY")


def beijing_time(at: datetime | None = None) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time, as Alipay writes and reads timestamps."""
    return (at or datetime.now(BEIJING)).astimezone(BEIJING).strftime(TIME_FORMAT)


def parse_beijing_time(text: str) -> datetime:
    """A Beijing timestamp, with or without milliseconds (``gmt_refund`` carries them)."""
    head, _, millis = text.partition(".")
    at = datetime.strptime(head, TIME_FORMAT).replace(tzinfo=BEIJING)
    if millis:
        if not (millis.isdigit() and len(millis) <= 6):
            raise ValueError(f"not a timestamp: {text!r}")
        at = at.replace(microsecond=int(millis.ljust(6, "0")))
    return at


@dataclass(frozen=True, slots=True)
class AlipayConfig:
    """An app's access to Alipay (应用): its APPID, its private key, Alipay's public key."""

    app_id: str
    app_private_key: str  # 应用私钥, PEM or bare base64
    alipay_public_key: str  # 支付宝公钥, PEM or bare base64
    gateway_url: str = DEFAULT_GATEWAY_URL
    seller_id: str | None = None  # the merchant's PID (2088…)
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_bill_bytes: int = MAX_BILL_BYTES

    @classmethod
    def from_credentials(
        cls, creds: Mapping[str, str], gateway_url: str | None = None
    ) -> AlipayConfig:
        """From the keys ``paygrid sandbox credentials alipay --json`` prints."""
        return cls(
            app_id=creds["app_id"],
            app_private_key=creds["app_private_key"],
            alipay_public_key=creds["alipay_public_key"],
            gateway_url=gateway_url or creds.get("gateway_url") or DEFAULT_GATEWAY_URL,
            seller_id=creds.get("seller_id") or creds.get("pid"),
        )


class AlipayApiError(ChannelError):
    """The gateway answered, with ``code`` other than 10000 (业务失败/网关错误)."""

    def __init__(self, node: Mapping[str, Any], *, verified: bool) -> None:
        self.gateway_code = str(node.get("code", ""))
        self.sub_code = str(node.get("sub_code", ""))
        self.msg = str(node.get("msg", ""))
        self.sub_msg = str(node.get("sub_msg", ""))
        self.node = dict(node)
        self.verified = verified  # False: the error node came unsigned
        retryable = (
            self.gateway_code in RETRYABLE_CODES
            or self.sub_code in RETRYABLE_SUB_CODES
            or self.sub_code.startswith("isp.")
        )
        detail = f"{self.gateway_code} {self.msg}: {self.sub_msg}".strip()
        super().__init__(self.sub_code or self.gateway_code, detail, retryable=retryable)


@dataclass(frozen=True, slots=True)
class PayForm:
    """A signed page/wap pay request for the payer's browser (电脑网站/手机网站支付)."""

    action: str  # the gateway URL
    fields: dict[str, str]

    def url(self) -> str:
        """The browser redirect (GET) form of the request."""
        return f"{self.action}?{urlencode(self.fields)}"

    def html(self) -> str:
        """An HTML form that submits itself (POST) on load, as the official SDKs render it."""
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in self.fields.items()
        )
        action = html.escape(f"{self.action}?charset=utf-8")
        return (
            f'<form id="alipaysubmit" name="alipaysubmit" action="{action}" method="POST">'
            f'{inputs}<input type="submit" value="ok" style="display:none"></form>'
            "<script>document.forms['alipaysubmit'].submit();</script>"
        )


class AlipayClient:
    """One app's calls to the gateway. Thread-safe (httpx.Client is)."""

    def __init__(self, config: AlipayConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self._private_key = signing.load_private_key(config.app_private_key)
        self._alipay_key = signing.load_public_key(config.alipay_public_key)
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            trust_env=False,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    # --- requests ---------------------------------------------------------------------------

    def signed_params(
        self,
        method: str,
        biz_content: Mapping[str, Any],
        *,
        notify_url: str | None = None,
        return_url: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """The common parameters (公共请求参数) and ``biz_content``, signed with RSA2."""
        params = {
            "app_id": self.config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": signing.SIGN_TYPE,
            "timestamp": beijing_time(now),
            "version": "1.0",
            "notify_url": notify_url or "",
            "return_url": return_url or "",
            "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
        }
        return signing.sign_request(params, self._private_key)

    def call(
        self, method: str, biz_content: Mapping[str, Any], *, notify_url: str | None = None
    ) -> dict[str, Any]:
        """Call a server API (POST form); the verified ``<method>_response`` node when its code
        is 10000, else :class:`AlipayApiError`."""
        params = self.signed_params(method, biz_content, notify_url=notify_url)
        try:
            response = self._http.post(
                self.config.gateway_url,
                content=urlencode(params).encode("ascii"),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded;charset=utf-8",
                    "Accept": "application/json",
                    "User-Agent": f"paygrid/{__version__}",
                },
            )
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        if response.status_code != 200:
            retryable = response.status_code >= 500 or response.status_code == 429
            raise ChannelError(
                f"HTTP_{response.status_code}", response.reason_phrase, retryable=retryable
            )
        return self._node(method, response.content)

    def _node(self, method: str, body: bytes) -> dict[str, Any]:
        if len(body) > MAX_RESPONSE_BYTES:
            raise ChannelError("INVALID_RESPONSE", "the answer is too large", retryable=True)
        try:
            raw = body.decode("utf-8")
            name, text, sign = signing.read_response(raw, method)
            node = json.loads(text)
        except (UnicodeDecodeError, ValueError, signing.SignatureError) as exc:
            raise ChannelError("INVALID_RESPONSE", str(exc), retryable=True) from exc
        verified = sign is not None and signing.rsa2_verify(self._alipay_key, text, sign)
        if not isinstance(node, dict):
            raise ChannelError("INVALID_RESPONSE", f"{name} is not an object", retryable=True)
        if node.get("code") == SUCCESS and name != signing.ERROR_NODE:
            if not verified:
                raise ChannelError(
                    "INVALID_RESPONSE_SIGNATURE",
                    f"{name} is unsigned or its signature does not verify",
                    retryable=True,
                )
            return node
        raise AlipayApiError(node, verified=verified)

    def page_pay(
        self,
        method: str,
        biz_content: Mapping[str, Any],
        *,
        return_url: str | None,
        notify_url: str | None,
    ) -> PayForm:
        """A signed ``alipay.trade.page.pay``/``alipay.trade.wap.pay`` for the browser."""
        if method not in (PAGE_PAY, WAP_PAY):
            raise ValueError(f"{method} is not a browser pay method")
        fields = self.signed_params(
            method, biz_content, notify_url=notify_url, return_url=return_url
        )
        return PayForm(action=self.config.gateway_url, fields=fields)

    # --- notifies and returns ---------------------------------------------------------------

    def verify_notify(self, form: Mapping[str, str]) -> dict[str, str]:
        """The notify's fields (异步通知) when its RSA2 signature verifies; else SignatureError.

        Checks the signature only: whether ``app_id``/``seller_id`` and the trade are ours is
        for the caller to decide."""
        signing.verify_notify(form, self._alipay_key)
        return dict(form)

    def verify_return(self, params: Mapping[str, str]) -> dict[str, str]:
        """The return_url query (同步跳转参数), signed like a notify."""
        return self.verify_notify(params)

    # --- bills (对账单) ----------------------------------------------------------------------

    def bill_download_url(self, bill_date: date, bill_type: str = "trade") -> str:
        node = self.call(BILL_QUERY, {"bill_type": bill_type, "bill_date": bill_date.isoformat()})
        url = node.get("bill_download_url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ChannelError("INVALID_RESPONSE", "no bill_download_url", retryable=True)
        return url

    def download(self, url: str) -> bytes:
        """GET a bill file, at most ``max_bill_bytes``."""
        limit = self.config.max_bill_bytes
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ChannelError(
                        f"HTTP_{response.status_code}", "bill download failed", retryable=True
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ChannelError("BILL_TOO_LARGE", f"bill exceeds {limit} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        return b"".join(chunks)

    def download_bill(self, bill_date: date, bill_type: str = "trade") -> bytes:
        """The bill zip of ``bill_date`` (Asia/Shanghai day); parse it with ``bill.py``."""
        return self.download(self.bill_download_url(bill_date, bill_type))


def _network_error(exc: httpx.HTTPError) -> ChannelError:
    code = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "NETWORK_ERROR"
    return ChannelError(code, f"{type(exc).__name__}: {exc}", retryable=True)
