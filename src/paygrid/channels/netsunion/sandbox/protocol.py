"""The platform's wire rules as the sandbox enforces them: refusals (system and business),
field readers, and the trade block every answer and notification carries. MODELLED codes and
fields: docs/netsunion.md."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.sandbox.store import Trade

if TYPE_CHECKING:
    from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox

DEBIT_KIND = "DEBIT"
PAGE_KIND = "PAGE"  # a gateway order (网关支付), paid at the bank's page
REFUND_KIND = "REFUND"
PAYMENT_KINDS = (DEBIT_KIND, PAGE_KIND)
MAX_AMOUNT_FEN = 5_000_000_00  # 5,000,000.00 yuan per debit (MODELLED limit)
MAX_DESCRIPTION_CHARS = 64
MAX_URL_CHARS = 512  # NtfyUrl, RtrnUrl (the merchant API takes 512)
# business codes (MODELLED)
NOT_FOUND = "NU4004"
CONFLICT = "NU4009"  # the same TrxId with other content
WRONG_CODE = "NU4021"
CODE_EXPIRED = "NU4022"
TOO_MANY_TRIES = "NU4023"
NO_AGREEMENT = "NU4031"
AGREEMENT_BANK = "NU4032"
FILES_NOT_READY = "NU4041"
REFUND_TOO_MUCH = "NU4051"
REFUND_TOO_LATE = "NU4052"
NOT_REFUNDABLE = "NU4053"
BANK_UNKNOWN = "NU4101"
ACCOUNT_MISMATCH = "NU4102"  # the bank's records do not match the details
NOT_CLOSABLE = "NU4062"  # only an unpaid gateway order can be closed (a debit cannot)
DECLINED = "NU5101"  # the bank refused the debit or the payment at its page
_DIGITS = re.compile(r"[0-9]+")


class SystemRefusal(Exception):
    """A message the platform does not process (SysRtnCd other than success)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class BusinessRefusal(Exception):
    """A processed message whose business failed (BizStsCd 01)."""

    def __init__(self, code: str, description: str, extra: wire.Node | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.extra = extra or {}


def bad(description: str) -> SystemRefusal:
    return SystemRefusal(wire.SYS_FORMAT, description)


def required(message: wire.Message, path: str, limit: int = 64) -> str:
    value = message.text(path)
    if value is None or len(value) > limit:
        raise bad(f"{path} 缺失或过长")
    return value


def trx_id(message: wire.Message, path: str) -> str:
    value = required(message, path, 40)
    if not wire.is_id(value):
        raise bad(f"{path} 格式不正确")
    return value


def amount(message: wire.Message, path: str) -> int:
    fen = wire.parse_amount(message.text(path))
    if fen is None or not 0 < fen <= MAX_AMOUNT_FEN:
        raise bad(f"{path} 须为 CNY 金额（如 CNY100.00）")
    return fen


def digits(value: str | None, low: int, high: int, name: str) -> str:
    if value is None or not _DIGITS.fullmatch(value) or not low <= len(value) <= high:
        raise bad(f"{name} 格式不正确")
    return value


def when(message: wire.Message, path: str) -> float | None:
    """An optional Beijing ``yyyy-MM-ddTHH:mm:ss`` field as epoch seconds."""
    text = message.text(path)
    if text is None:
        return None
    at = wire.parse_time(text)
    if at is None:
        raise bad(f"{path} 须为 yyyy-MM-ddTHH:mm:ss")
    return at.timestamp()


def url(message: wire.Message, path: str) -> str:
    value = message.text(path) or ""
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > MAX_URL_CHARS:
        raise bad(f"{path} 必须是 http(s) 地址")
    return value


def new_number(prefix: str, now: float) -> str:
    """A platform number (SysTrxId, SgnNo): prefix, Beijing date-time, 12 random digits."""
    at = datetime.fromtimestamp(now, wire.BEIJING)
    return f"{prefix}{at:%Y%m%d%H%M%S}{secrets.randbelow(10**12):012d}"


def masked(account_no: str) -> str:
    return account_no[:4] + "*" * (len(account_no) - 8) + account_no[-4:]


def beijing(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, wire.BEIJING).strftime(wire.TIME_FORMAT)


MSG_TPS = {DEBIT_KIND: wire.DEBIT, PAGE_KIND: wire.GATEWAY, REFUND_KIND: wire.REFUND}


def trade_block(sandbox: NetsUnionSandbox, trade: Trade) -> wire.Node:
    """``OriTrxInf`` of a query answer or a notification (``TrxInf`` of a debit/refund answer)."""
    debit = trade.kind in PAYMENT_KINDS
    day = sandbox.settlement_date(trade)
    return {
        "OriMsgTp": MSG_TPS[trade.kind],
        "TrxId": trade.trx_id,
        "OriTrxId": None if debit else trade.ori_trx_id,
        "TrxCtgy": wire.DEBIT_CATEGORY if debit else wire.REFUND_CATEGORY,
        "TrxAmt": wire.amount_text(trade.amount),
        "TrxStatus": trade.status,
        "SysTrxId": trade.sys_trx_id,
        "PyerAcctIssrId": trade.bank_id,
        "TrxDtTm": beijing(trade.created_at),
        "TrxFinishDtTm": beijing(trade.finished_at),
        "TrxExpDtTm": beijing(trade.expires_at),
        "BatchId": trade.batch_id or None,
        "SttlmDt": day.isoformat() if day else None,
        "RfdAmt": wire.amount_text(trade.refunded) if debit else None,
        "BizRtnCd": trade.failure or None,
    }


class SandboxError(Exception):
    """A refusal of the sandbox's own side (``/sandbox/...``), as JSON with a status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
