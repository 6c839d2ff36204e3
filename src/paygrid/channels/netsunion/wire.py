"""The NetsUnion message on the wire: an XML document ``<root><MsgHeader>…</MsgHeader>
<MsgBody>…</MsgBody></root>``, a newline, and the signature trailer ``{S:<base64>}`` over the
document's bytes; HTTP headers ``MsgTp`` and ``OriIssrId`` repeat the type and the sender.

The envelope, the header fields and the trailer are OBSERVED (formats/netsunion.md §2-3); the
answer and notification message types, the return codes and most body fields are MODELLED
(docs/netsunion.md). Parsing is hostile-input safe: ``defusedxml`` refuses DTDs, entities and
external references; the document's size, depth and element count are bounded.
Pure computation: no I/O.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Union
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from paygrid.channels.netsunion import crypto
from paygrid.kernel.money import MoneyError, format_major, parse_major

BEIJING = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # SndDt / TrxDtTm: Beijing local time, as observed
CONTENT_TYPE = "application/xml;charset=utf-8"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 6
MAX_ELEMENTS = 400
MAX_TEXT_CHARS = 2048
TRAILER_START = b"\n{S:"

# Message types. 101 and 201 are OBSERVED; the answers (+1 on the middle number), refund,
# query, notification and file download numbers are MODELLED.
AGREEMENT = "epcc.101.001.01"  # 身份认证及签约 (TrxCtgy 0201 ask, 0202 confirm)
AGREEMENT_ANSWER = "epcc.102.001.01"
DEBIT = "epcc.201.001.01"  # 协议支付
DEBIT_ANSWER = "epcc.202.001.01"
GATEWAY = "epcc.211.001.01"  # 网关支付: the payer pays at the bank's page (MODELLED number)
GATEWAY_ANSWER = "epcc.212.001.01"
GATEWAY_CLOSE = "epcc.213.001.01"  # 网关支付关闭: an unpaid gateway order closed (MODELLED)
GATEWAY_CLOSE_ANSWER = "epcc.214.001.01"
REFUND = "epcc.301.001.01"  # 退款 (MODELLED)
REFUND_ANSWER = "epcc.302.001.01"
QUERY = "epcc.411.001.01"  # 交易结果查询 (MODELLED)
QUERY_ANSWER = "epcc.412.001.01"
FILES = "epcc.421.001.01"  # 清算文件下载 (MODELLED)
FILES_ANSWER = "epcc.422.001.01"
NOTIFY = "epcc.711.001.01"  # 交易结果通知, platform -> member (MODELLED)
NOTIFY_ANSWER = "epcc.712.001.01"  # the member's acknowledgement
ERROR_ANSWER = "epcc.902.001.01"  # the answer to a request that cannot be read (MODELLED)
ANSWERS: Mapping[str, str] = {
    AGREEMENT: AGREEMENT_ANSWER,
    DEBIT: DEBIT_ANSWER,
    GATEWAY: GATEWAY_ANSWER,
    GATEWAY_CLOSE: GATEWAY_CLOSE_ANSWER,
    REFUND: REFUND_ANSWER,
    QUERY: QUERY_ANSWER,
    FILES: FILES_ANSWER,
    NOTIFY: NOTIFY_ANSWER,
}
# Direction (Drctn), OBSERVED values per the public IDC notice code [N4]
FROM_MEMBER = "20"
FROM_PLATFORM = "02"
PLATFORM_SENDER = "G4000311000018"  # OBSERVED platform id: OriIssrId of its notifications
# Return codes (MODELLED): SysRtnCd for the message, BizStsCd for the business outcome
SYS_OK = "00000000"
SYS_BUSY = "PS500001"  # not processed; the same message may be sent again
SYS_FORMAT = "PS400001"
SYS_SIGNATURE = "PS400002"
SYS_MEMBER = "PS400003"
BIZ_SUCCESS = "00"
BIZ_FAILED = "01"
BIZ_PROCESSING = "02"
TRX_CLOSED = "03"  # TrxStatus only: a gateway order closed or expired unpaid (MODELLED)
AGREEMENT_ASK = "0201"
AGREEMENT_CONFIRM = "0202"
DEBIT_CATEGORY = "0101"  # MODELLED TrxCtgy of a payment: an agreement debit or a gateway one
REFUND_CATEGORY = "0301"  # MODELLED
_AMOUNT = re.compile(r"CNY(0|[1-9][0-9]{0,12})\.[0-9]{2}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


class WireError(ValueError):
    """A message that is not a NetsUnion message: framing, XML, size, or a header."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A sensitive body value: encrypted under the message's session key when built."""

    value: str


Node = Mapping[str, Union[str, Secret, "Node", Sequence["Node"], None]]


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed, not yet verified, message: its header fields and its body element."""

    header: Mapping[str, str]
    body: ET.Element
    signed: bytes  # the exact bytes the trailer's signature covers
    signature: str
    http_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def msg_tp(self) -> str:
        return self.header.get("MsgTp", "")

    @property
    def issuer(self) -> str:
        return self.header.get("IssrId", "")

    def text(self, path: str) -> str | None:
        """The text at ``path`` under MsgBody (``TrxInf/TrxId``); None when absent or empty."""
        found = self.body.find(path)
        value = found.text.strip() if found is not None and found.text else ""
        return value or None

    def all(self, path: str) -> list[ET.Element]:
        return self.body.findall(path)


# --- building ---------------------------------------------------------------------------------


def build(
    header: Mapping[str, str],
    body: Node,
    signer: crypto.KeyPair,
    recipient: bytes | None = None,
) -> bytes:
    """The framed, signed message. Secret values are encrypted under a fresh session key
    enveloped for ``recipient`` (``NcrptnSN`` and ``DgtlEnvlp`` then join the header)."""
    session = crypto.new_session_key() if _has_secret(body) else None
    head = dict(header)
    if session is not None:
        if recipient is None:
            raise ValueError("a message with sensitive fields needs the recipient's key")
        head["DgtlEnvlp"] = crypto.envelope(recipient, session)
    root = ET.Element("root")
    header_el = ET.SubElement(root, "MsgHeader")
    for name, value in head.items():
        ET.SubElement(header_el, name).text = value
    _fill(ET.SubElement(root, "MsgBody"), body, session)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + TRAILER_START + crypto.sign(signer, document).encode("ascii") + b"}"


def _has_secret(node: Node) -> bool:
    for value in node.values():
        if isinstance(value, Secret):
            return True
        if isinstance(value, Mapping) and _has_secret(value):
            return True
        if isinstance(value, list | tuple) and any(_has_secret(v) for v in value):
            return True
    return False


def _fill(parent: ET.Element, node: Node, session: bytes | None) -> None:
    for name, value in node.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            _fill(ET.SubElement(parent, name), value, session)
        elif isinstance(value, str):
            ET.SubElement(parent, name).text = value
        elif isinstance(value, Secret):
            assert session is not None
            ET.SubElement(parent, name).text = crypto.encrypt_field(session, value.value)
        else:
            for item in value:
                _fill(ET.SubElement(parent, name), item, session)


# --- reading ----------------------------------------------------------------------------------


def parse(data: bytes, http_headers: Mapping[str, str] | None = None) -> Message:
    """The message in ``data`` (document + trailer). WireError when it is not one; the
    signature is not checked here (:func:`verified`)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("message too large")
    document, start, rest = data.rpartition(TRAILER_START)
    trailer = rest.rstrip(b"\r\n")
    if not start or not trailer.endswith(b"}"):
        raise WireError("no {S:...} signature trailer")
    try:
        signature = trailer[:-1].decode("ascii")
        root = SafeET.fromstring(document, forbid_dtd=True)
    except (UnicodeDecodeError, ET.ParseError, DefusedXmlException) as exc:
        raise WireError(f"not a readable message: {type(exc).__name__}") from exc
    _bounded(root)
    if root.tag != "root" or [c.tag for c in root] != ["MsgHeader", "MsgBody"]:
        raise WireError("the document is not <root><MsgHeader/><MsgBody/></root>")
    header = {c.tag: (c.text or "").strip() for c in root[0]}
    if len(header) != len(root[0]) or any(len(c) for c in root[0]):
        raise WireError("MsgHeader must hold distinct plain fields")
    headers = {k.lower(): v for k, v in (http_headers or {}).items()}
    for name, value in (("msgtp", header.get("MsgTp")), ("oriissrid", header.get("IssrId"))):
        if name in headers and headers[name] != value:
            raise WireError(f"the HTTP header {name} disagrees with the message")
    return Message(header, root[1], document, signature, dict(http_headers or {}))


def _bounded(root: ET.Element) -> None:
    count = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_ELEMENTS:
            raise WireError("message too deep or too large")
        if "}" in element.tag or element.attrib:
            raise WireError("namespaces and attributes are not part of the message")
        if element.text and len(element.text) > MAX_TEXT_CHARS:
            raise WireError("a field is too long")
        stack.extend((child, depth + 1) for child in element)


def verified(message: Message, public: bytes) -> bool:
    return crypto.verify(public, message.signed, message.signature)


def secret(message: Message, path: str, pair: crypto.KeyPair) -> str | None:
    """A sensitive field decrypted with the session key of the message's envelope."""
    text = message.text(path)
    if text is None:
        return None
    envelope = message.header.get("DgtlEnvlp")
    if not envelope:
        raise crypto.CryptoError("an encrypted field without a digital envelope")
    return crypto.decrypt_field(crypto.open_envelope(pair, envelope), text)


# --- values -----------------------------------------------------------------------------------


def amount_text(fen: int) -> str:
    """``TrxAmt``: 10000 fen -> ``CNY100.00`` (currency prefix as observed in samples)."""
    if fen < 0:
        raise ValueError("a negative amount has no TrxAmt")
    return "CNY" + format_major(fen, "CNY")


def parse_amount(text: object) -> int | None:
    """``CNY100.00`` -> 10000 fen, exactly; None for anything else (no sign, no exponent,
    exactly two decimals, ASCII digits only, CNY only)."""
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        return None
    try:
        return parse_major(text[3:], "CNY")
    except MoneyError:
        return None


def beijing_text(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("timezone-aware times only")
    return at.astimezone(BEIJING).strftime(TIME_FORMAT)


def parse_time(text: object) -> datetime | None:
    """A Beijing ``yyyy-MM-ddTHH:mm:ss`` as an aware datetime; None when not one."""
    if not isinstance(text, str) or len(text) != 19:
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError:
        return None


def is_id(value: object) -> bool:
    """A TrxId, SgnNo or similar reference: ASCII letters, digits, ``_`` and ``-``."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def header(msg_tp: str, issuer: str, serial: str, direction: str, now: datetime) -> dict[str, str]:
    return {
        "SndDt": beijing_text(now),
        "MsgTp": msg_tp,
        "IssrId": issuer,
        "Drctn": direction,
        "SignSN": serial,
        "NcrptnSN": serial,
    }


def http_headers(message_type: str, issuer: str) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, "MsgTp": message_type, "OriIssrId": issuer}
