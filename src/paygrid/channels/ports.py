"""The one interface every channel adapter implements, and the values that cross it.

Domain-level: no web framework, no database driver. The payment core speaks only these types;
each channel folder (wechatpay/, ...) turns them into its own protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from paygrid.kernel.money import Money


class TradeState(enum.Enum):
    """The channel's view of one trade, mapped to what the payment core needs."""

    PENDING = "PENDING"  # created, payer has not paid (NOTPAY, USERPAYING)
    SUCCESS = "SUCCESS"  # paid; also after refunds (WeChat's REFUND state)
    CLOSED = "CLOSED"  # closed or expired without payment (CLOSED, REVOKED)
    FAILED = "FAILED"  # payment attempt failed (PAYERROR)
    NOT_FOUND = "NOT_FOUND"  # the channel has no such order


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A channel order for one payment. ``payment_ref`` is the id the channel knows it by."""

    payment_ref: str
    amount: Money
    description: str
    notify_url: str
    method: str  # native | h5 | jsapi | app
    expire_at: datetime | None = None
    attach: str | None = None
    payer_ip: str | None = None
    payer_openid: str | None = None


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """What the payer needs to pay: a QR ``code_url`` (native), ``h5_url`` or ``prepay_id``."""

    code_url: str | None = None
    h5_url: str | None = None
    prepay_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelAccount:
    """Who we are at the channel: every trade of ours carries these ids (WeChat Pay: ``mchid``
    and ``appid``). ``app_id`` is None for a channel without app ids."""

    merchant_id: str
    app_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade as the channel reports it (query answer or decoded callback): a fact, not a
    decision. Every field the payment core decides on is explicit; None means the channel left
    it out or sent it ill-typed, and the core then refuses to change anything on it."""

    payment_ref: str | None  # our id toward the channel (WeChat's out_trade_no)
    state: TradeState | None
    channel_trade_no: str | None = None
    amount: Money | None = None  # the order total the channel holds; None if total/currency bad
    paid_at: datetime | None = None
    raw_state: str = ""
    merchant_id: str | None = None  # the channel merchant the trade belongs to
    app_id: str | None = None
    defect: str | None = None  # an authenticated report that breaks the protocol (see adapter)


@dataclass(frozen=True, slots=True)
class Callback:
    """A verified, decrypted channel notification (回调). ``notify_id`` is the channel's own id."""

    notify_id: str
    trade: Trade


class CloseOutcome(enum.Enum):
    CLOSED = "CLOSED"
    ALREADY_PAID = "ALREADY_PAID"


@dataclass(frozen=True, slots=True)
class BillLine:
    """One line of the channel's daily trade bill (对账单), amounts exact in minor units."""

    trade_time: datetime
    channel_trade_no: str
    payment_ref: str
    kind: str  # PAYMENT | REFUND
    amount: Money
    fee: Money
    refund_ref: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallbackReply:
    """How to answer the channel's callback: the status, body and headers it expects."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class ChannelError(Exception):
    """The channel refused or failed a call. ``retryable`` when the same call may succeed later."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class CallbackRefusal(enum.Enum):
    """Why a callback is refused (not acknowledged, so the channel sends it again later)."""

    BAD_SIGNATURE = "BAD_SIGNATURE"  # signature, its headers, serial or timestamp
    UNDECRYPTABLE = "UNDECRYPTABLE"  # the encrypted resource does not open under our key
    MALFORMED = "MALFORMED"  # authentic, but not a notification we can read
    UNKNOWN_PAYMENT = "UNKNOWN_PAYMENT"  # for a payment we do not hold
    RETRY_LATER = "RETRY_LATER"  # we could not take it now (the payment is busy)


class CallbackRejected(Exception):
    """A callback that does not verify, decrypt or parse; it changes nothing."""

    def __init__(
        self, message: str, refusal: CallbackRefusal = CallbackRefusal.BAD_SIGNATURE
    ) -> None:
        super().__init__(message)
        self.refusal = refusal


class ChannelAdapter(Protocol):
    """One channel, as the payment core sees it."""

    name: str
    account: ChannelAccount
    currencies: frozenset[str]  # ISO 4217 codes the channel takes payments in

    def create_order(self, request: OrderRequest) -> OrderCreated: ...

    def query(self, payment_ref: str) -> Trade: ...

    def close(self, payment_ref: str) -> CloseOutcome: ...

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback:
        """Verify and decrypt a callback; raise CallbackRejected when it does not verify."""
        ...

    def callback_ack(self) -> CallbackReply: ...

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        """The channel's failure answer: an exact status per refusal (the channel retries)."""
        ...

    def download_bill(self, bill_date: date) -> bytes: ...

    def parse_bill(self, content: bytes) -> list[BillLine]: ...
