"""A thin client of UnionPay's online gateway (全渠道 ACP 5.1.0).

It fills the common fields (``version``, ``encoding``, ``merId``, ``accessType``…), signs
requests with the merchant's certificate (signMethod 01), posts the back-end ones as forms with
explicit timeouts, parses the ``k=v`` answers and verifies them (``signPubKeyCert`` against the
root and intermediate, then the signature); it signs the front-end form the payer's browser
posts, and verifies notifications. It decides nothing about payments: the adapter does.

Errors are :class:`ChannelError`: :class:`UnionPayApiError` for an answer whose ``respCode``
is not ``00`` (``verified`` tells whether UnionPay signed it), ``TIMEOUT``/``NETWORK_ERROR``
and ``INVALID_RESPONSE*`` (all retryable) for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from paygrid import __version__
from paygrid.channels.ports import ChannelError
from paygrid.channels.unionpay import signing
from paygrid.channels.unionpay.credentials import gateway_urls
from paygrid.channels.unionpay.parsing import (
    NOT_FOUND_CODE,
    PENDING_CODES,
    RETRYABLE_CODES,
    SUCCESS,
)

DEFAULT_BASE_URL = "https://gateway.95516.com"
ACCESS_TYPE = "0"  # 商户直连接入
MAX_RESPONSE_BYTES = 512 * 1024  # an answer; a file transfer's is larger
MAX_FILE_RESPONSE_BYTES = 96 * 1024 * 1024  # base64 of a deflated day of ZM lines
MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class UnionPayConfig:
    """A merchant's access to UnionPay: its merId, signing key and certificate, UnionPay's
    root and intermediate certificates, and the gateway's URLs."""

    mer_id: str
    sign_private_key: str
    sign_cert: str
    root_cert: str
    middle_cert: str
    front_trans_url: str
    back_trans_url: str
    single_query_url: str
    file_trans_url: str
    validate_cn_name: bool = True
    connect_timeout: float = 2.0
    read_timeout: float = 5.0

    @classmethod
    def from_credentials(
        cls, creds: Mapping[str, str], base_url: str | None = None
    ) -> UnionPayConfig:
        """From the keys ``paygrid sandbox credentials unionpay --json`` prints; ``base_url``
        (the registry's) names the gateway host when given."""
        urls = gateway_urls(base_url) if base_url else dict(creds)
        if not base_url and "front_trans_url" not in creds:
            urls = gateway_urls(DEFAULT_BASE_URL)
        return cls(
            mer_id=creds["mer_id"],
            sign_private_key=creds["sign_private_key"],
            sign_cert=creds["sign_cert"],
            root_cert=creds["root_cert"],
            middle_cert=creds["middle_cert"],
            front_trans_url=urls["front_trans_url"],
            back_trans_url=urls["back_trans_url"],
            single_query_url=urls["single_query_url"],
            file_trans_url=urls["file_trans_url"],
            validate_cn_name=str(creds.get("validate_cn_name", "true")).lower() != "false",
        )


class UnionPayApiError(ChannelError):
    """The gateway answered with a ``respCode`` other than 00."""

    def __init__(self, fields: Mapping[str, str], *, verified: bool) -> None:
        self.resp_code = str(fields.get("respCode", ""))[:8]
        self.fields = dict(fields)
        self.verified = verified
        retryable = (
            not verified or self.resp_code in PENDING_CODES or self.resp_code in RETRYABLE_CODES
        )
        message = str(fields.get("respMsg", ""))[:MAX_MESSAGE_CHARS]
        super().__init__(self.resp_code or "NO_RESP_CODE", message, retryable=retryable)

    @property
    def pending(self) -> bool:
        """03/04/05: the transaction may have been done; query it, never take it as refused."""
        return self.resp_code in PENDING_CODES

    @property
    def not_found(self) -> bool:
        return self.resp_code == NOT_FOUND_CODE


class UnionPayClient:
    """One merchant's calls to the gateway. Thread-safe (httpx.Client is)."""

    def __init__(self, config: UnionPayConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self._key = signing.load_private_key(config.sign_private_key)
        self.cert_id = signing.cert_id(signing.load_cert(config.sign_cert))
        self.verifier = signing.CertVerifier(
            config.root_cert, config.middle_cert, validate_cn_name=config.validate_cn_name
        )
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            trust_env=False,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def signed(self, fields: Mapping[str, str]) -> dict[str, str]:
        """The common fields added to ``fields``, blank ones left out, signed."""
        common = {
            "version": signing.VERSION,
            "encoding": signing.ENCODING,
            "merId": self.config.mer_id,
            "accessType": ACCESS_TYPE,
        }
        return signing.sign_request({**common, **fields}, self._key, self.cert_id)

    def front_form(self, fields: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """(frontTransReq.do, the signed fields) for the payer's browser to post."""
        return self.config.front_trans_url, self.signed(fields)

    def back(self, fields: Mapping[str, str]) -> dict[str, str]:
        return self.call(self.config.back_trans_url, fields)

    def query(self, fields: Mapping[str, str]) -> dict[str, str]:
        return self.call(self.config.single_query_url, fields)

    def file_transfer(self, fields: Mapping[str, str]) -> dict[str, str]:
        return self.call(self.config.file_trans_url, fields, MAX_FILE_RESPONSE_BYTES)

    def call(
        self, url: str, fields: Mapping[str, str], limit: int = MAX_RESPONSE_BYTES
    ) -> dict[str, str]:
        """POST the signed form; the verified answer when its respCode is 00, else
        :class:`UnionPayApiError`."""
        body = urlencode(self.signed(fields)).encode("ascii")
        headers = {
            "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
            "User-Agent": f"paygrid/{__version__}",
        }
        try:
            with self._http.stream("POST", url, content=body, headers=headers) as response:
                if response.status_code != 200:
                    retryable = response.status_code >= 500 or response.status_code == 429
                    raise ChannelError(
                        f"HTTP_{response.status_code}", "the gateway refused", retryable=retryable
                    )
                data = _read(response, limit)
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        return self._answer(data)

    def _answer(self, data: bytes) -> dict[str, str]:
        try:
            fields = signing.parse_kv(data.decode("utf-8").strip())
        except (UnicodeDecodeError, ValueError) as exc:
            raise ChannelError("INVALID_RESPONSE", str(exc), retryable=True) from exc
        try:
            self.verifier.verify(fields)
            verified = True
        except signing.SignatureError as exc:
            if fields.get("respCode") == SUCCESS:
                raise ChannelError("INVALID_RESPONSE_SIGNATURE", str(exc), retryable=True) from exc
            verified = False
        if fields.get("respCode") != SUCCESS:
            raise UnionPayApiError(fields, verified=verified)
        return fields

    def verify_notification(self, fields: Mapping[str, str]) -> None:
        """SignatureError unless UnionPay signed ``fields`` (a backUrl or frontUrl post)."""
        self.verifier.verify(fields)


def _read(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ChannelError("INVALID_RESPONSE", f"the answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _network_error(exc: httpx.HTTPError) -> ChannelError:
    code = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "NETWORK_ERROR"
    return ChannelError(code, f"{type(exc).__name__}: {exc}", retryable=True)
