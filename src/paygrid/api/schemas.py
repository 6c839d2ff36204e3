"""Request bodies of the merchant API, validated strictly: amounts are JSON integers (a float
or a string is refused), URLs are absolute http(s), currencies are ISO 4217, no text holds a
control character."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from paygrid.kernel.money import MAX_MINOR_UNITS, is_known_currency

MAX_ITEMS = 100
MAX_DISCOUNTS = 20
MAX_URL_LEN = 512
OUT_TRADE_NO_PATTERN = r"^[A-Za-z0-9_\-|*.:]+$"
CURRENCIES = ("CNY",)  # what the channels take (wechatpay: CNY); documented in the OpenAPI


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


class CreatePaymentIn(_Strict):
    out_trade_no: Annotated[str, Field(min_length=1, max_length=64, pattern=OUT_TRADE_NO_PATTERN)]
    amount: AmountIn
    description: Text
    notify_url: Url
    return_url: Url | None = None
    channel: Literal["wechatpay"] | None = None
    # Not "h5" or "jsapi": their channel order needs the payer's IP address or openid, which
    # this body does not carry, so the channel would refuse every one (after the payment).
    method: Literal["cashier", "native", "app"] = "cashier"
    expire_at: Annotated[datetime, AfterValidator(_aware)] | None = None
    attach: Annotated[str, Field(max_length=512), AfterValidator(_printable)] | None = None
    items: Annotated[list[ItemIn], Field(max_length=MAX_ITEMS)] | None = None
    discounts: Annotated[list[DiscountIn], Field(max_length=MAX_DISCOUNTS)] | None = None


class CloseIn(_Strict):
    pass
