"""WeChat Pay API v3's transport: every request signed with the merchant API key, every answer
but the bill stream verified, either with the WeChat Pay public key (微信支付公钥 mode,
``Wechatpay-Serial`` = ``PUB_KEY_ID_…``) or with platform certificates (平台证书 mode) fetched
from ``/v3/certificates`` and decrypted with the APIv3 key. Network trouble and 5xx are
retryable ``ChannelError``; 4xx are final with WeChat's error code."""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid import __version__
from paygrid.channels.ports import ChannelError
from paygrid.channels.wechatpay import signing

DEFAULT_BASE_URL = "https://api.mch.weixin.qq.com"
CERT_REFRESH_SECONDS = 60.0  # an unknown serial refetches certificates at most this often
MAX_BILL_BYTES = 1 << 30


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


class WechatPayTransport:
    """Signed calls to one merchant's WeChat Pay API, answers verified."""

    def __init__(self, config: WechatPayConfig, http: httpx.Client | None = None) -> None:
        self._config = config
        self.base = config.base_url.rstrip("/")
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
        )
        self._private_key = signing.load_private_key(config.private_key)
        self._public_key = signing.load_public_key(config.public_key) if config.public_key else None
        self._certs: dict[int, rsa.RSAPublicKey] = {}
        self._certs_lock = threading.Lock()
        self._certs_fetched = float("-inf")

    def download(self, path: str) -> bytes:
        request = self.request("GET", path, b"")
        limit = self._config.max_bill_bytes
        try:
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 300:
                    response.read()
                    self.raise_for_status(response)
                content = _read_bounded(response, limit)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        if content[:2] == b"\x1f\x8b":  # served gzipped although not asked: unpack, bounded
            content = _gunzip_bounded(content, limit)
        return content

    # --- transport --------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes) -> httpx.Request:
        url = httpx.URL(self.base + path)
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

    def send(self, method: str, path: str, payload: Mapping[str, Any] | None) -> httpx.Response:
        body = b"" if payload is None else _json_bytes(payload)
        try:
            return self._http.send(self.request(method, path, body))
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc

    def call(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """Send, verify the answer's signature, and turn errors into ChannelError."""
        response = self.send(method, path, payload)
        if response.status_code >= 500 or response.status_code == 429:
            self.raise_for_status(response)
        try:
            signing.verify_response(response.headers, response.content, self.key_for_serial)
        except signing.SignatureError as exc:
            code, _ = _error_of(response)
            raise ChannelError(
                "INVALID_RESPONSE_SIGNATURE",
                f"HTTP {response.status_code} {code}: {exc}",
                retryable=True,
            ) from exc
        if response.status_code >= 300:
            self.raise_for_status(response)
        return response

    @staticmethod
    def raise_for_status(response: httpx.Response) -> None:
        code, message = _error_of(response)
        retryable = response.status_code >= 500 or response.status_code == 429
        raise ChannelError(code, message, retryable=retryable)

    @staticmethod
    def json(response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise ChannelError("INVALID_RESPONSE", "answer is not JSON", retryable=True) from exc
        if not isinstance(data, dict):
            raise ChannelError("INVALID_RESPONSE", "answer is not a JSON object", retryable=True)
        return data

    # --- platform keys (平台证书 / 微信支付公钥) ---------------------------------------------

    def key_for_serial(self, serial: str) -> rsa.RSAPublicKey | None:
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
        response = self.send("GET", "/v3/certificates", None)
        if response.status_code != 200:
            self.raise_for_status(response)
        try:
            certs = _decrypt_certificates(self.json(response), self._config.apiv3_key)
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
