"""A thin client of the NetsUnion platform for one member (支付机构): it builds, encrypts and
signs messages, posts them with explicit timeouts, verifies the answer's signature and sender,
reads notifications, and downloads clearing files with a bound on their size and a check of
their SM3 digest. It decides nothing about payments: the adapter maps messages onto the port.

Errors are :class:`ChannelError`: :class:`NetsUnionError` for a signed answer whose SysRtnCd
is not success, ``TIMEOUT``/``NETWORK_ERROR``/``INVALID_RESPONSE*`` (retryable) for the rest.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from paygrid import __version__
from paygrid.channels.netsunion import crypto, wire
from paygrid.channels.netsunion.credentials import PLATFORM_ID
from paygrid.channels.ports import ChannelError

MAX_FILE_BYTES = 256 * 1024 * 1024
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0  # as the other channels: a merchant call waits on one channel call


@dataclass(frozen=True, slots=True)
class NetsUnionConfig:
    member_id: str  # our institution id (InstgId / IssrId)
    private_key: str  # PEM, our SM2 key
    cert_sn: str  # our certificate's serial (SignSN)
    platform_public_key: str  # PEM
    platform_cert_sn: str
    gateway_url: str
    platform_id: str = PLATFORM_ID
    reserve_account: str = ""
    connect_timeout: float = CONNECT_TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    max_file_bytes: int = MAX_FILE_BYTES

    @classmethod
    def from_credentials(cls, creds: Mapping[str, str], gateway_url: str) -> NetsUnionConfig:
        """From the keys ``paygrid sandbox credentials netsunion --json`` prints."""
        return cls(
            member_id=creds["member_id"],
            private_key=creds["member_private_key"],
            cert_sn=creds["member_cert_sn"],
            platform_public_key=creds["platform_public_key"],
            platform_cert_sn=creds["platform_cert_sn"],
            gateway_url=gateway_url,
            platform_id=creds.get("platform_id") or PLATFORM_ID,
            reserve_account=creds.get("reserve_account", ""),
        )


class NetsUnionError(ChannelError):
    """The platform answered, signed, with a SysRtnCd other than success."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=code == wire.SYS_BUSY)


class NetsUnionClient:
    """One member's calls to the platform. Thread-safe (httpx.Client is)."""

    def __init__(self, config: NetsUnionConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self.keys = crypto.load_private(config.private_key)
        self.platform_key = crypto.load_public(config.platform_public_key)
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            trust_env=False,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def message(self, msg_tp: str, body: wire.Node, now: datetime | None = None) -> bytes:
        head = wire.header(
            msg_tp,
            self.config.member_id,
            self.config.cert_sn,
            wire.FROM_MEMBER,
            now or datetime.now(UTC),
        )
        return wire.build(head, body, self.keys, self.platform_key)

    def call(self, msg_tp: str, body: wire.Node) -> wire.Message:
        """Send a message; its verified answer when SysRtnCd is success, else NetsUnionError
        (signed) or a retryable ChannelError (unsigned, unreadable, lost)."""
        data = self.message(msg_tp, body)
        headers = {
            **wire.http_headers(msg_tp, self.config.member_id),
            "User-Agent": f"paygrid/{__version__}",
        }
        try:
            response = self._http.post(self.config.gateway_url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        if response.status_code != 200:
            retryable = response.status_code >= 500 or response.status_code == 429
            raise ChannelError(
                f"HTTP_{response.status_code}", response.reason_phrase, retryable=retryable
            )
        return self._answer(msg_tp, response.content, dict(response.headers))

    def _answer(self, msg_tp: str, body: bytes, headers: Mapping[str, str]) -> wire.Message:
        try:
            answer = wire.parse(body, _wire_headers(headers))
        except wire.WireError as exc:
            raise ChannelError("INVALID_RESPONSE", str(exc), retryable=True) from exc
        if not self.is_platforms(answer):
            raise ChannelError(
                "INVALID_RESPONSE_SIGNATURE",
                "the answer is not signed by the platform",
                retryable=True,
            )
        code = answer.text("SysRtnInf/SysRtnCd") or ""
        if code != wire.SYS_OK:
            raise NetsUnionError(code or "NO_CODE", answer.text("SysRtnInf/SysRtnDesc") or "")
        if answer.msg_tp != wire.ANSWERS[msg_tp]:
            raise ChannelError(
                "INVALID_RESPONSE", f"a {answer.msg_tp[:20]!r} answers {msg_tp}", retryable=True
            )
        return answer

    def is_platforms(self, message: wire.Message) -> bool:
        """Signed by the platform's key, under its id and certificate serial."""
        return (
            message.issuer == self.config.platform_id
            and hmac.compare_digest(message.header.get("SignSN", ""), self.config.platform_cert_sn)
            and wire.verified(message, self.platform_key)
        )

    def read_notification(self, headers: Mapping[str, str], body: bytes) -> wire.Message:
        """A notification the platform sent us, verified; WireError or PermissionError."""
        message = wire.parse(body, _wire_headers(headers))
        if not self.is_platforms(message):
            raise PermissionError("the notification is not signed by the platform")
        return message

    def ack(self, msg_tp: str = wire.NOTIFY_ANSWER) -> bytes:
        """Our signed acknowledgement of a notification (SysRtnCd success)."""
        body = {"SysRtnInf": {"SysRtnCd": wire.SYS_OK, "SysRtnDesc": "成功"}}
        return self.message(msg_tp, body)

    def nack(self, code: str, description: str) -> bytes:
        body = {"SysRtnInf": {"SysRtnCd": code, "SysRtnDesc": description}}
        return self.message(wire.NOTIFY_ANSWER, body)

    def download(self, url: str, digest_hex: str) -> bytes:
        """GET a clearing file, at most ``max_file_bytes``; its SM3 must be the signed one."""
        limit = self.config.max_file_bytes
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ChannelError(
                        f"HTTP_{response.status_code}", "file download failed", retryable=True
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ChannelError("FILE_TOO_LARGE", f"file exceeds {limit} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _network_error(exc) from exc
        content = b"".join(chunks)
        if not hmac.compare_digest(crypto.sm3(content).hex(), digest_hex.lower()):
            raise ChannelError(
                "FILE_DIGEST_MISMATCH", "the file is not the one announced", retryable=True
            )
        return content


def _wire_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    return {k: lowered[k] for k in ("msgtp", "oriissrid") if k in lowered}


def _network_error(exc: httpx.HTTPError) -> ChannelError:
    code = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "NETWORK_ERROR"
    return ChannelError(code, f"{type(exc).__name__}: {exc}", retryable=True)
