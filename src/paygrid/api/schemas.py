"""Request bodies of the merchant API, validated strictly: amounts are JSON integers (a float
or a string is refused), URLs are absolute http(s), currencies are ISO 4217, no text holds a
control character."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from ipaddress import ip_address
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from paygrid.channels import registry
from paygrid.channels.ports import METHODS as METHODS_OF_CHANNELS
from paygrid.kernel.banks import BANKS
from paygrid.kernel.money import MAX_MINOR_UNITS, is_known_currency

MAX_ITEMS = 100
MAX_REFUND_ITEMS = 100
MAX_REASON_LEN = 80  # the shortest refund reason any channel keeps (80 characters)
MAX_DISCOUNTS = 20
MAX_URL_LEN = 512
OUT_TRADE_NO_PATTERN = r"^[A-Za-z0-9_\-|*.:]+$"
ID_BODY = "[0-9A-HJKMNP-TV-Z]{26}"  # Crockford base32, kernel.ids
PAYMENT_ID_PATTERN = f"^pay_{ID_BODY}$"
REFUND_ID_PATTERN = f"^rfd_{ID_BODY}$"
AGREEMENT_ID_PATTERN = f"^agr_{ID_BODY}$"
# What the registry's channels take, and the channels themselves: documented in the OpenAPI.
CURRENCIES = tuple(sorted({c for ch in registry.CHANNELS for c in ch.capabilities.currencies}))
CHANNELS = registry.NAMES
METHODS = ("cashier", *METHODS_OF_CHANNELS)


# Never in a text field: C0 controls (NUL, tab, line feeds...), DEL, C1 controls, unpaired
# surrogates, the Unicode line/paragraph separators and the bidirectional overrides that can
# make a description on the cashier page read differently from what it says.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def has_control_characters(value: str) -> bool:
    return any(
        unicodedata.category(c) in _FORBIDDEN_CATEGORIES or c in _BIDI_CONTROLS for c in value
    )


def _printable(value: str) -> str:
    if has_control_characters(value):
        raise ValueError("must not contain control characters")
    return value


def _url_characters(value: str) -> str:
    if has_control_characters(value) or any(c.isspace() for c in value):
        raise ValueError("must not contain control characters or spaces")
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > MAX_URL_LEN:
        raise ValueError(f"must be an absolute http(s) URL of at most {MAX_URL_LEN} characters")
    return value


def _currency(value: str) -> str:
    if not is_known_currency(value):
        raise ValueError("must be an ISO 4217 currency code such as CNY")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone offset (RFC 3339)")
    return value


Url = Annotated[
    str,
    AfterValidator(_url_characters),
    AfterValidator(_url),
    Field(
        json_schema_extra={
            "format": "uri",
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
            "maxLength": MAX_URL_LEN,
        }
    ),
]
Fen = Annotated[int, Field(ge=0, le=MAX_MINOR_UNITS)]
Text = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class AmountIn(_Strict):
    total: Annotated[int, Field(gt=0, le=MAX_MINOR_UNITS)]
    currency: Annotated[
        str, AfterValidator(_currency), Field(json_schema_extra={"enum": list(CURRENCIES)})
    ]


class ItemIn(_Strict):
    sku: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
    name: Text
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]
    unit_amount: Fen


class DiscountIn(_Strict):
    name: Text
    amount: Fen


def _channel(value: str) -> str:
    if value not in CHANNELS:
        raise ValueError(f"must be one of {', '.join(CHANNELS)}")
    return value


def _method(value: str) -> str:
    if value not in METHODS:
        raise ValueError(f"must be one of {', '.join(METHODS)}")
    return value


def _bank(value: str) -> str:
    if value not in BANKS:
        raise ValueError(f"must be one of {', '.join(sorted(BANKS))}")
    return value


def _ip(value: str) -> str:
    try:
        ip_address(value)
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None
    return value


ChannelName = Annotated[
    str, AfterValidator(_channel), Field(json_schema_extra={"enum": list(CHANNELS)})
]
MethodName = Annotated[
    str, AfterValidator(_method), Field(json_schema_extra={"enum": list(METHODS)})
]


BankCode = Annotated[str, AfterValidator(_bank), Field(json_schema_extra={"enum": sorted(BANKS)})]
OpenId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]


class PayerIn(_Strict):
    """What a method needs to know of the payer (the channel's capabilities say which):
    ``client_ip`` for h5, ``openid`` (the payer at the channel's app) for jsapi."""

    client_ip: Annotated[str, Field(max_length=45), AfterValidator(_ip)] | None = None
    openid: (
        Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)] | None
    ) = None
    # The payer's bank (付款银行), a code of kernel/banks.py: routing may choose by it.
    bank: BankCode | None = None
    # A signed agreement of yours (method "agreement", 协议支付): the payment debits its account.
    agreement_id: Annotated[str, Field(pattern=AGREEMENT_ID_PATTERN)] | None = None


class CreatePaymentIn(_Strict):
    out_trade_no: Annotated[str, Field(min_length=1, max_length=64, pattern=OUT_TRADE_NO_PATTERN)]
    amount: AmountIn
    description: Text
    notify_url: Url
    return_url: Url | None = None
    channel: ChannelName | None = None
    # A channel method (native, h5, page, jsapi, app) needs a channel that declares it; h5 and
    # jsapi need the payer's IP address or openid (``payer``).
    method: MethodName = "cashier"
    payer: PayerIn | None = None
    expire_at: Annotated[datetime, AfterValidator(_aware)] | None = None
    attach: Annotated[str, Field(max_length=512), AfterValidator(_printable)] | None = None
    items: Annotated[list[ItemIn], Field(max_length=MAX_ITEMS)] | None = None
    discounts: Annotated[list[DiscountIn], Field(max_length=MAX_DISCOUNTS)] | None = None


class CloseIn(_Strict):
    pass


MerchantNumber = Annotated[str, Field(min_length=1, max_length=64, pattern=OUT_TRADE_NO_PATTERN)]


class RefundItemIn(_Strict):
    sku: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]


class CreateRefundIn(_Strict):
    """A refund (退款) of a successful payment, named by ``payment_id`` or ``out_trade_no``
    (exactly one of them); ``amount`` in fen of the payment's currency."""

    payment_id: Annotated[str, Field(pattern=PAYMENT_ID_PATTERN)] | None = None
    out_trade_no: MerchantNumber | None = None
    out_refund_no: MerchantNumber
    amount: Annotated[int, Field(gt=0, le=MAX_MINOR_UNITS)]
    reason: (
        Annotated[str, Field(min_length=1, max_length=MAX_REASON_LEN), AfterValidator(_printable)]
        | None
    ) = None
    notify_url: Url | None = None
    items: Annotated[list[RefundItemIn], Field(max_length=MAX_REFUND_ITEMS)] | None = None


class CreateAgreementIn(_Strict):
    """Sign an agreement (协议签约) for the payer's bank account with a channel that debits
    accounts: the bank texts the payer a code, confirmed with ``/confirm``. The account's
    details go to the channel and are not stored (the agreement keeps the masked account)."""

    out_agreement_no: MerchantNumber
    channel: ChannelName | None = None
    bank: BankCode
    account_no: Annotated[str, Field(min_length=12, max_length=19, pattern=r"^[0-9]+$")]
    holder_name: Text
    id_type: Annotated[str, Field(pattern=r"^01$")] = "01"  # 01: resident identity card (身份证)
    id_no: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9X]$")]
    mobile: Annotated[str, Field(pattern=r"^1[0-9]{10}$")]


class ConfirmAgreementIn(_Strict):
    sms_code: Annotated[str, Field(pattern=r"^[0-9]{4,8}$")]
