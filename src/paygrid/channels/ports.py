"""The one interface every channel adapter implements, and the values that cross it.

Domain-level: no web framework, no database driver. The payment core speaks only these types;
each channel folder (see registry.py) turns them into its own protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol

from paygrid.kernel.money import Money


class TradeState(enum.Enum):
    """The channel's view of one trade, mapped to what the payment core needs."""

    PENDING = "PENDING"  # created, payer has not paid (NOTPAY, USERPAYING)
    SUCCESS = "SUCCESS"  # paid; also after refunds (a channel may name that state apart)
    CLOSED = "CLOSED"  # closed or expired without payment (CLOSED, REVOKED)
    FAILED = "FAILED"  # payment attempt failed (PAYERROR)
    NOT_FOUND = "NOT_FOUND"  # the channel has no such order


METHODS = ("native", "h5", "page", "jsapi", "app", "agreement")
"""Payment methods (支付方式) a channel may declare: ``native`` a QR code the payer scans, ``h5``
a mobile-browser redirect, ``page`` a desktop-browser redirect or form, ``jsapi`` inside the
channel's own app or browser (mini program, official account), ``app`` the merchant's app,
``agreement`` a debit of the payer's bank account under an agreement signed before (协议支付:
see :class:`AgreementChannel`)."""


class PayerField(enum.StrEnum):
    """What a method needs to know of the payer, given by the merchant at creation."""

    CLIENT_IP = "client_ip"  # the payer's IP address (H5 payments)
    OPENID = "openid"  # the payer's id at the channel's app (JSAPI payments)
    BANK = "bank"  # the payer's bank (kernel/banks.py code): account-based payments
    AGREEMENT = "agreement_no"  # the payer's signed agreement (协议号): agreement payments


@dataclass(frozen=True, slots=True)
class Payer:
    client_ip: str | None = None
    openid: str | None = None
    bank: str | None = None  # kernel/banks.py code of the payer's bank (付款银行), if known
    agreement_no: str | None = None  # the channel's agreement number (协议号), if signed

    def has(self, needed: PayerField) -> bool:
        return getattr(self, needed.value) is not None


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A channel order for one payment. ``payment_ref`` is the id the channel knows it by."""

    payment_ref: str
    amount: Money
    description: str
    notify_url: str
    method: str  # one of the channel's capabilities.methods
    expire_at: datetime | None = None
    attach: str | None = None
    payer_ip: str | None = None
    payer_openid: str | None = None
    return_url: str | None = None  # where a redirect method sends the payer back
    payer_bank: str | None = None  # kernel/banks.py code; the channel maps it to its own
    agreement_no: str | None = None  # method "agreement": the debit's agreement (协议号)


class PayerActionKind(enum.StrEnum):
    """What the payer (or the merchant's front end) does next to pay."""

    QR_CODE = "qr_code"  # show ``content`` as a QR code; the payer scans it
    REDIRECT = "redirect"  # send the payer's browser to ``url``
    FORM = "form"  # auto-submit an HTML form of ``fields`` to ``url`` (POST)
    APP_PARAMS = "app_params"  # hand ``fields`` to the channel's app or JSAPI SDK
    WAIT = "wait"  # nothing to do: the channel is debiting the payer's account; wait for it


@dataclass(frozen=True, slots=True)
class PayerAction:
    """The tagged answer of a channel order: exactly what the payer needs, nothing of the
    channel's wire format. ``content`` is the QR text; ``url`` the target of a redirect or form."""

    kind: PayerActionKind
    content: str | None = None
    url: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        needs = {
            PayerActionKind.QR_CODE: self.content,
            PayerActionKind.REDIRECT: self.url,
            PayerActionKind.FORM: self.url,
            PayerActionKind.APP_PARAMS: self.fields or None,
            PayerActionKind.WAIT: "nothing",  # a debit needs no target
        }[self.kind]
        assert needs, f"a {self.kind} payer action needs its target"

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"kind": self.kind.value}
        if self.content is not None:
            body["content"] = self.content
        if self.url is not None:
            body["url"] = self.url
        if self.fields:
            body["fields"] = dict(self.fields)
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PayerAction:
        fields = data.get("fields") or {}
        assert isinstance(fields, Mapping)
        content, url = data.get("content"), data.get("url")
        return cls(
            PayerActionKind(str(data["kind"])),
            content=str(content) if content is not None else None,
            url=str(url) if url is not None else None,
            fields={str(k): str(v) for k, v in fields.items()},
        )


@dataclass(frozen=True, slots=True)
class ChannelCapabilities:
    """What a channel can do, declared in its folder and read by the core and the API: an
    unsupported method or currency is refused at creation, a refund past the window at once."""

    methods: frozenset[str]
    currencies: frozenset[str]  # ISO 4217
    partial_refunds: bool
    refund_window: timedelta  # how long after payment the channel takes a refund
    bill_types: frozenset[str]  # the channel's own bill type names
    payer_fields: Mapping[str, frozenset[PayerField]] = field(default_factory=dict)
    cashier_methods: tuple[str, ...] = ()  # the methods a browser cashier offers, in order

    def __post_init__(self) -> None:
        assert self.methods <= set(METHODS), f"unknown methods {self.methods - set(METHODS)}"
        assert set(self.payer_fields) <= self.methods
        assert set(self.cashier_methods) <= self.methods

    def missing_payer_fields(self, method: str, payer: Payer) -> list[str]:
        needed = self.payer_fields.get(method, frozenset())
        return sorted(f.value for f in needed if not payer.has(f))


@dataclass(frozen=True, slots=True)
class ChannelAccount:
    """Who we are at the channel: every trade of ours carries these ids (e.g. ``mchid``
    and ``appid``). ``app_id`` is None for a channel without app ids."""

    merchant_id: str
    app_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade as the channel reports it (query answer or decoded callback): a fact, not a
    decision. Every field the payment core decides on is explicit; None means the channel left
    it out or sent it ill-typed, and the core then refuses to change anything on it."""

    payment_ref: str | None  # our id toward the channel (its out_trade_no)
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


class RefundState(enum.Enum):
    """The channel's view of one refund (退款), mapped to what the refund core needs."""

    PROCESSING = "PROCESSING"  # accepted, money not yet back (also an abnormal refund: held)
    SUCCESS = "SUCCESS"  # the money went back to the payer
    FAILED = "FAILED"  # the channel gave up (closed it); the amount is refundable again
    NOT_FOUND = "NOT_FOUND"  # the channel has no such refund


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A refund at the channel. ``refund_ref`` is our id for it toward the channel (its
    out_refund_no or out_request_no); the channel takes it once, whatever the repeats."""

    refund_ref: str
    payment_ref: str  # the channel order's out_trade_no
    amount: Money  # what to give back now
    total: Money  # the payment's total, which several channels want repeated
    notify_url: str
    reason: str | None = None
    channel_trade_no: str | None = None


@dataclass(frozen=True, slots=True)
class RefundTrade:
    """A refund as the channel reports it (answer, query or callback): a fact, not a decision;
    None where the channel left a field out or sent it ill-typed."""

    refund_ref: str | None
    state: RefundState | None
    payment_ref: str | None = None
    channel_refund_no: str | None = None
    amount: Money | None = None
    succeeded_at: datetime | None = None
    raw_state: str = ""  # the channel's own word (ABNORMAL, REFUND_SUCCESS...)
    merchant_id: str | None = None
    defect: str | None = None  # an authenticated report that breaks the protocol


@dataclass(frozen=True, slots=True)
class RefundCallback:
    """A verified channel notification about a refund."""

    notify_id: str
    refund: RefundTrade


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


BILL_NOT_READY = "BILL_NOT_READY"  # a bill (or statement) not out yet: fetch again later


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


class AgreementState(enum.Enum):
    """An agreement (协议) between the payer's bank account and us, as the channel holds it."""

    PENDING_CODE = "PENDING_CODE"  # asked; the bank sent the payer an SMS code to confirm
    SIGNED = "SIGNED"  # confirmed: ``agreement_no`` debits the account from now on
    FAILED = "FAILED"  # refused (wrong details, too many wrong codes, code expired)


@dataclass(frozen=True, slots=True)
class AgreementRequest:
    """Sign an agreement (协议签约) for a payer's bank account. ``agreement_ref`` is our id for
    it toward the channel: the channel takes it once, whatever the repeats. The account's
    details are sensitive: a channel sends them encrypted and keeps none of them in logs."""

    agreement_ref: str
    bank: str  # kernel/banks.py code of the account's bank
    account_no: str  # the bank card or account number (卡号)
    holder_name: str  # the account holder's name (户名)
    id_type: str  # the holder's identity document type: "01" resident identity card (身份证)
    id_no: str  # the document's number
    mobile: str  # the mobile number the bank has for the account (预留手机号)


@dataclass(frozen=True, slots=True)
class AgreementResult:
    """An agreement as the channel reports it: a fact. ``message`` is the channel's own words
    (what the payer is shown on a refusal: "验证码错误" ...)."""

    agreement_ref: str
    state: AgreementState
    agreement_no: str | None = None  # set once SIGNED: what OrderRequest.agreement_no carries
    masked_account: str | None = None  # e.g. ``6222********1234``
    bank: str | None = None  # kernel/banks.py code
    message: str = ""
    code: str = ""  # the channel's refusal code, when FAILED or a code was refused


class AgreementChannel(Protocol):
    """A channel whose payments debit a bank account under an agreement (协议支付): sign the
    agreement once (request, then confirm with the SMS code the bank sent the payer), then each
    payment is ``create_order`` with method ``agreement`` and the agreement number."""

    def request_agreement(self, request: AgreementRequest) -> AgreementResult:
        """Ask the bank to send the payer an SMS code (idempotent on ``agreement_ref``):
        PENDING_CODE, or FAILED when the bank refuses the account's details."""
        ...

    def confirm_agreement(self, agreement_ref: str, sms_code: str) -> AgreementResult:
        """Confirm with the payer's SMS code: SIGNED with the agreement number; PENDING_CODE
        when the code was wrong and the payer may try again; FAILED when no more tries."""
        ...


class ChannelAdapter(Protocol):
    """One channel, as the payment core sees it."""

    name: str
    account: ChannelAccount
    capabilities: ChannelCapabilities

    def create_order(self, request: OrderRequest) -> PayerAction:
        """Place the order (idempotent on ``payment_ref``) and say what the payer does next."""
        ...

    def query(self, payment_ref: str) -> Trade: ...

    def close(self, payment_ref: str) -> CloseOutcome: ...

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> Callback | RefundCallback:
        """Verify and decrypt a callback (of a payment or of a refund); raise
        CallbackRejected when it does not verify."""
        ...

    def refund(self, request: RefundRequest) -> RefundTrade:
        """Ask for a refund (idempotent on ``refund_ref``); the answer is often PROCESSING."""
        ...

    def query_refund(self, refund_ref: str, payment_ref: str) -> RefundTrade: ...

    def callback_ack(self) -> CallbackReply: ...

    def callback_nack(
        self, reason: str, refusal: CallbackRefusal = CallbackRefusal.MALFORMED
    ) -> CallbackReply:
        """The channel's failure answer: an exact status per refusal (the channel retries)."""
        ...

    def download_bill(self, bill_date: date) -> bytes: ...

    def parse_bill(self, content: bytes) -> list[BillLine]: ...
