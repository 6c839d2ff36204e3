"""The served OpenAPI document of the merchant API, made exact.

The handlers read the raw body and the raw query (the signature covers the exact bytes), so
FastAPI cannot infer the request side: each route declares its parameters, body and every
response it can give with the helpers below, and :func:`install` finishes the document: the
signing scheme, the request-body schemas, and no 422 (FastAPI's validation error, which this
API never answers: every refusal is a 400 with the error body)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema, models_json_schema

from paygrid.api.auth import MAX_NONCE_LEN, SCHEME, TIMESTAMP_WINDOW_S
from paygrid.api.idempotency import MAX_KEY_LEN
from paygrid.api.schemas import (
    AGREEMENT_ID_PATTERN,
    CHANNELS,
    ID_BODY,
    MAX_REASON_LEN,
    MAX_REFUND_ITEMS,
    MAX_URL_LEN,
    METHODS,
    OUT_TRADE_NO_PATTERN,
    PAYMENT_ID_PATTERN,
    REFUND_ID_PATTERN,
    CreatePaymentIn,
    CreateRefundIn,
)
from paygrid.kernel.money import MAX_MINOR_UNITS
from paygrid.payments.refunds import MAX_REFUNDS_PER_PAYMENT

SECURITY_SCHEME = "PaygridSignature"
_ID_BODY = ID_BODY  # Crockford base32, kernel.ids
NOTIFY_ID_PATTERN = f"^ntf_{_ID_BODY}$"
REQUEST_ID_PATTERN = "^req_[0-9a-f]{20}$"
CURRENCY_PATTERN = "^[A-Z]{3}$"
DATE_TIME: JsonDict = {"format": "date-time"}


# --- response bodies --------------------------------------------------------------------
class _Out(BaseModel):
    """Documentation of a response body; ``extra="forbid"`` documents that no other member
    appears (the schemathesis run checks every answer against these)."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Out):
    """Every refusal: a machine code, a human message, the request id (also in the Request-Id
    header), and the field at fault when there is one."""

    code: str = Field(pattern="^[A-Z][A-Z0-9_]*$", examples=["INVALID_AMOUNT"])
    message: str
    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    field: str | SkipJsonSchema[None] = Field(default=None, examples=["amount.total"])


class Amount(_Out):
    total: int = Field(gt=0, le=MAX_MINOR_UNITS, description="minor units (fen)")
    currency: str = Field(pattern=CURRENCY_PATTERN, examples=["CNY"])


class Item(_Out):
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    quantity: int = Field(ge=1, le=1_000_000)
    unit_amount: int = Field(ge=0, le=MAX_MINOR_UNITS)


class Discount(_Out):
    name: str = Field(min_length=1, max_length=128)
    amount: int = Field(ge=0, le=MAX_MINOR_UNITS)


class RefundSummary(_Out):
    """One refund of a payment, as the payment lists it."""

    refund_id: str = Field(pattern=REFUND_ID_PATTERN)
    out_refund_no: str = Field(pattern=OUT_TRADE_NO_PATTERN, max_length=64)
    amount: int = Field(gt=0, le=MAX_MINOR_UNITS)
    status: Literal["PROCESSING", "SUCCESS", "FAILED"]
    created_at: str = Field(json_schema_extra=DATE_TIME)


class Payment(_Out):
    """The payment as GET returns it (and as notifications carry it)."""

    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    mchid: str = Field(pattern="^m[0-9]{10}$")
    out_trade_no: str = Field(pattern=OUT_TRADE_NO_PATTERN, max_length=64)
    amount: Amount
    description: str = Field(min_length=1, max_length=128)
    status: Literal["CREATED", "PAYING", "SUCCESS", "FAILED", "CLOSED"]
    channel: str | None = Field(json_schema_extra={"enum": [*CHANNELS, None]})
    method: str = Field(json_schema_extra={"enum": list(METHODS)})
    cashier_url: str = Field(description="the hosted cashier page for the payer")
    notify_url: str = Field(max_length=MAX_URL_LEN)
    return_url: str | None = Field(max_length=MAX_URL_LEN)
    expire_at: str = Field(json_schema_extra=DATE_TIME)
    attach: str | None = Field(max_length=512)
    items: list[Item]
    discounts: list[Discount]
    channel_trade_no: str | None
    created_at: str = Field(json_schema_extra=DATE_TIME)
    paid_at: str | None = Field(json_schema_extra=DATE_TIME)
    closed_at: str | None = Field(json_schema_extra=DATE_TIME)
    code_url: str | SkipJsonSchema[None] = Field(
        default=None, description="once a channel order exists (native method: the QR code)"
    )
    payer_action: PayerAction | SkipJsonSchema[None] = Field(
        default=None, description="once a channel order exists: what the payer does next"
    )
    refunded_amount: int | SkipJsonSchema[None] = Field(
        default=None, ge=0, description="present when SUCCESS"
    )
    refunds: list[RefundSummary] | SkipJsonSchema[None] = Field(
        default=None,
        max_length=MAX_REFUNDS_PER_PAYMENT,
        description="present when SUCCESS: its refunds, oldest first",
    )


class Agreement(_Out):
    """An agreement (协议) as the merchant sees it; never the channel's agreement number."""

    agreement_id: str = Field(pattern=AGREEMENT_ID_PATTERN)
    out_agreement_no: str = Field(pattern=OUT_TRADE_NO_PATTERN, max_length=64)
    channel: str = Field(json_schema_extra={"enum": list(CHANNELS)})
    bank: str
    masked_account: str = Field(description="e.g. 6222********0123")
    status: Literal["REQUESTED", "PENDING_CODE", "SIGNED", "FAILED"]
    message: str = Field(description="the channel's words to the payer, e.g. a wrong code")
    created_at: str = Field(json_schema_extra=DATE_TIME)
    updated_at: str = Field(json_schema_extra=DATE_TIME)


class PayerAction(_Out):
    """What the payer does next: ``qr_code`` (show ``content`` as a QR code), ``redirect`` (send
    the browser to ``url``), ``form`` (POST ``fields`` to ``url`` from the browser),
    ``app_params`` (hand ``fields`` to the channel's app or JSAPI SDK)."""

    kind: Literal["qr_code", "redirect", "form", "app_params"]
    content: str | SkipJsonSchema[None] = None
    url: str | SkipJsonSchema[None] = None
    fields: dict[str, str] | SkipJsonSchema[None] = None


class RefundItem(_Out):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1_000_000)


class Refund(_Out):
    """The refund as GET returns it (and as its notifications carry it). ``status`` PROCESSING
    while the channel has not given the money back (also while the channel holds it as
    abnormal: ``channel_status`` says so), then SUCCESS or FAILED."""

    refund_id: str = Field(pattern=REFUND_ID_PATTERN)
    mchid: str = Field(pattern="^m[0-9]{10}$")
    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    out_trade_no: str = Field(pattern=OUT_TRADE_NO_PATTERN, max_length=64)
    out_refund_no: str = Field(pattern=OUT_TRADE_NO_PATTERN, max_length=64)
    amount: int = Field(gt=0, le=MAX_MINOR_UNITS, description="minor units (fen)")
    currency: str = Field(pattern=CURRENCY_PATTERN, examples=["CNY"])
    reason: str | None = Field(max_length=MAX_REASON_LEN)
    notify_url: str | None = Field(
        max_length=MAX_URL_LEN, description="null: notifications go to the payment's notify_url"
    )
    items: list[RefundItem] = Field(max_length=MAX_REFUND_ITEMS)
    status: Literal["PROCESSING", "SUCCESS", "FAILED"]
    channel: str = Field(json_schema_extra={"enum": list(CHANNELS)})
    channel_refund_no: str | None = Field(description="the channel's refund number, once known")
    channel_status: str | None = Field(
        description="the channel's own word on the refund (e.g. ABNORMAL), or why it refused"
    )
    created_at: str = Field(json_schema_extra=DATE_TIME)
    succeeded_at: str | None = Field(json_schema_extra=DATE_TIME)
    failed_at: str | None = Field(json_schema_extra=DATE_TIME)


class Delivery(_Out):
    attempt: int = Field(ge=1)
    at: str = Field(json_schema_extra=DATE_TIME)
    http_status: int | None = Field(description="null when no HTTP answer came")
    error: str | None
    duration_ms: int = Field(ge=0)
    manual: bool = Field(description="a resend asked for by the merchant or an operator")


class Notification(_Out):
    id: str = Field(pattern=NOTIFY_ID_PATTERN)
    type: str = Field(examples=["payment.succeeded"])
    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    url: str = Field(max_length=MAX_URL_LEN)
    status: Literal["PENDING", "DELIVERED", "FAILED"]
    attempts: int = Field(ge=0)
    max_attempts: int = Field(ge=1)
    next_attempt_at: str | None = Field(json_schema_extra=DATE_TIME)
    created_at: str = Field(json_schema_extra=DATE_TIME)
    delivered_at: str | None = Field(json_schema_extra=DATE_TIME)
    deliveries: list[Delivery]


class NotificationList(_Out):
    data: list[Notification] = Field(max_length=200)


# --- parameters and bodies ----------------------------------------------------------------
def path_param(name: str, description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def query_param(
    name: str, description: str, schema: Mapping[str, Any], *, required: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string", **schema},
    }


PAYMENT_ID = path_param(
    "payment_id",
    "The payment's id; an id that names no payment of yours is 404 PAYMENT_NOT_FOUND.",
    {"pattern": PAYMENT_ID_PATTERN},
)
NOTIFY_ID = path_param(
    "notify_id",
    "The notification's id; an id that names no notification of yours is 404 "
    "NOTIFICATION_NOT_FOUND.",
    {"pattern": NOTIFY_ID_PATTERN},
)
BILL_DATE = path_param(
    "bill_date",
    "The business date (Asia/Shanghai), yyyy-mm-dd; today gives the day so far, a later "
    "date or another form is 400 INVALID_BILL_DATE.",
    {"format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
)
REPORT_DATE = path_param(
    "report_date",
    "The business date (Asia/Shanghai), yyyy-mm-dd; a later date than today, one before "
    "2000-01-01 or another form is 400 INVALID_REPORT_DATE; a date of which no channel's bill "
    "has been taken in yet is 404 REPORT_NOT_READY.",
    {"format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
)
OUT_TRADE_NO = query_param(
    "out_trade_no",
    "The merchant's order number given at creation; missing is 400 INVALID_OUT_TRADE_NO, "
    "one that names no payment of yours is 404 PAYMENT_NOT_FOUND.",
    {"pattern": OUT_TRADE_NO_PATTERN, "minLength": 1, "maxLength": 64},
    required=True,
)
REFUND_ID = path_param(
    "refund_id",
    "The refund's id; an id that names no refund of yours is 404 REFUND_NOT_FOUND.",
    {"pattern": REFUND_ID_PATTERN},
)
AGREEMENT_ID = path_param(
    "agreement_id",
    "The agreement's id; an id that names no agreement of yours is 404 AGREEMENT_NOT_FOUND.",
    {"pattern": AGREEMENT_ID_PATTERN},
)
OUT_REFUND_NO = query_param(
    "out_refund_no",
    "The merchant's refund number given at creation; missing is 400 INVALID_OUT_REFUND_NO, "
    "one that names no refund of yours is 404 REFUND_NOT_FOUND.",
    {"pattern": OUT_TRADE_NO_PATTERN, "minLength": 1, "maxLength": 64},
    required=True,
)
PAYMENT_FILTER = query_param(
    "payment_id",
    "Only the notifications of this payment (none when it names no payment of yours).",
    {"pattern": PAYMENT_ID_PATTERN},
    required=False,
)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key with the same request returns the first response byte for "
    "byte (header Idempotent-Replayed: true); with another request 409 "
    "IDEMPOTENCY_KEY_REUSED; while the first still runs 409 IDEMPOTENCY_REQUEST_IN_PROGRESS. "
    "A refused request does not consume the key.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN},
}


def operation(
    *parameters: Mapping[str, Any], body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` of a route: its parameters and request body as the handler reads
    them (the route's own path parameters are replaced by these in :func:`install`)."""
    extra: dict[str, Any] = {}
    if parameters:
        extra["parameters"] = [dict(p) for p in parameters]
    if body is not None:
        extra["requestBody"] = dict(body)
    return extra


def json_body(model: type[BaseModel], example: Mapping[str, Any]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": dict(example)}},
    }


CREATE_EXAMPLE = {
    "out_trade_no": "order-20260101-0001",
    "amount": {"total": 1200, "currency": "CNY"},
    "description": "book",
    "notify_url": "http://127.0.0.1:8080/paygrid/notify",
    "items": [{"sku": "B1", "name": "book", "quantity": 1, "unit_amount": 1200}],
}


CREATE_AGREEMENT_EXAMPLE = {
    "out_agreement_no": "card-20260101-0001",
    "bank": "ICBC",
    "account_no": "6222021234567890123",
    "holder_name": "张三",
    "id_type": "01",
    "id_no": "11010519491231002X",
    "mobile": "13800138000",
}
CREATE_REFUND_EXAMPLE = {
    "payment_id": "pay_01KB3Z7Q0W00000000000000A0",
    "out_refund_no": "refund-20260101-0001",
    "amount": 300,
    "reason": "out of stock",
    "items": [{"sku": "B1", "quantity": 1}],
}


EMPTY_BODY = {
    "required": False,
    "description": "No body, or {} (the members of an object are ignored).",
    "content": {"application/json": {"schema": {"type": "object"}}},
}

# --- responses ----------------------------------------------------------------------------
_REQUEST_ID_HEADER = {
    "Request-Id": {
        "description": "This request's id, as in the error body and the logs.",
        "required": True,
        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
    }
}
_REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "true when this is the stored response of an earlier request with the "
        "same Idempotency-Key.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    }
}
ERRORS: Mapping[int, str] = {
    400: "Refused input (nothing changed): MALFORMED_JSON, INVALID_<FIELD> (e.g. "
    "INVALID_AMOUNT, INVALID_CURRENCY, INVALID_NOTIFY_URL, INVALID_EXPIRE_AT, INVALID_CHANNEL, "
    "INVALID_METHOD, INVALID_PAYER, METHOD_NOT_SUPPORTED, PAYER_REQUIRED, INVALID_DESCRIPTION, "
    "INVALID_OUT_TRADE_NO, INVALID_BILL_DATE, INVALID_REPORT_DATE, INVALID_PAYMENT_ID, "
    "INVALID_OUT_REFUND_NO, INVALID_REASON, INVALID_IDEMPOTENCY_KEY), UNSUPPORTED_CURRENCY, "
    "ITEMS_TOTAL_MISMATCH, INVALID_DISCOUNTS, INVALID_ITEMS, CHANNEL_NOT_SUPPORTED, NO_ROUTE "
    "(no channel named and no routing rule covers the payment), AGREEMENT_NOT_SUPPORTED, "
    "INVALID_PAYER (an agreement that is not yours or not signed); `field` names the member "
    "at fault.",
    401: f"The {SCHEME} signature is missing or wrong: UNAUTHORIZED, SIGNATURE_INVALID, "
    "TIMESTAMP_EXPIRED, TIMESTAMP_INVALID, NONCE_REUSED, NONCE_INVALID, KEY_EXPIRED (a key "
    "rotated away whose grace period is over).",
    404: "PAYMENT_NOT_FOUND, REFUND_NOT_FOUND, AGREEMENT_NOT_FOUND or NOTIFICATION_NOT_FOUND: "
    "nothing of yours has this id.",
    409: "The request conflicts with the payment's state or an earlier request: "
    "DUPLICATE_OUT_TRADE_NO, IDEMPOTENCY_KEY_REUSED, IDEMPOTENCY_REQUEST_IN_PROGRESS, "
    "PAYMENT_ALREADY_PAID, PAYMENT_CLOSED, PAYMENT_FAILED, PAYMENT_EXPIRED, CONCURRENT_UPDATE; "
    "for refunds DUPLICATE_OUT_REFUND_NO, PAYMENT_NOT_REFUNDABLE, REFUND_EXCEEDS_REMAINING, "
    "REFUND_WINDOW_CLOSED, PARTIAL_REFUND_NOT_SUPPORTED, TOO_MANY_REFUNDS; for agreements "
    "DUPLICATE_OUT_AGREEMENT_NO, AGREEMENT_NOT_PENDING.",
    413: "BODY_TOO_LARGE: the body exceeds 64 KiB.",
    502: "CHANNEL_ERROR: the payment channel refused the call; retry may not help.",
    503: "DATABASE_UNAVAILABLE, CHANNEL_UNAVAILABLE, or NO_CHANNEL_AVAILABLE (routing found "
    "every eligible channel out): retry later, with the same Idempotency-Key.",
}
COMMON_ERRORS = (400, 401, 413, 503)


def _error(status: int) -> dict[str, Any]:
    return {"model": ErrorBody, "description": ERRORS[status], "headers": _REQUEST_ID_HEADER}


def _payment_link(operation_id: str, parameter: str, member: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {parameter: f"$response.body#/{member}"}}


PAYMENT_LINKS = {
    "GetPayment": _payment_link("getPayment", "payment_id", "payment_id"),
    "FindPayment": _payment_link("findPayment", "out_trade_no", "out_trade_no"),
    "ClosePayment": _payment_link("closePayment", "payment_id", "payment_id"),
    "ListNotifications": _payment_link("listNotifications", "payment_id", "payment_id"),
}

REFUND_LINKS = {
    "GetRefund": _payment_link("getRefund", "refund_id", "refund_id"),
    "FindRefund": _payment_link("findRefund", "out_refund_no", "out_refund_no"),
    "GetRefundedPayment": _payment_link("getPayment", "payment_id", "payment_id"),
}

AGREEMENT_LINKS = {
    "GetAgreement": _payment_link("getAgreement", "agreement_id", "agreement_id"),
    "ConfirmAgreement": _payment_link("confirmAgreement", "agreement_id", "agreement_id"),
}

NOTIFICATION_LINKS = {
    "ResendNotification": {
        "operationId": "resendNotification",
        "parameters": {"notify_id": "$response.body#/data/0/id"},
    }
}


def responses(
    ok: Mapping[int, tuple[type[BaseModel], str]],
    errors: Iterable[int] = (),
    *,
    replayable: bool = False,
    links: Mapping[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a JSON route: its successes, the common errors and ``errors``."""
    headers = {**_REQUEST_ID_HEADER, **(_REPLAYED_HEADER if replayable else {})}
    out: dict[int | str, dict[str, Any]] = {
        status: {"model": model, "description": text, "headers": headers}
        for status, (model, text) in ok.items()
    }
    if links:
        for response in out.values():
            response["links"] = dict(links)
    for status in sorted({*COMMON_ERRORS, *errors}):
        out[status] = _error(status)
    return out


def csv_responses(
    description: str, headers: Mapping[str, Any], errors: Mapping[int, str] | None = None
) -> dict[int | str, Any]:
    """``responses`` of a CSV route: its success, the common errors and ``errors`` (status:
    the description of this route's refusals with it)."""
    ok = {
        "description": description,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "headers": {**_REQUEST_ID_HEADER, **headers},
    }
    out: dict[int | str, Any] = {200: ok, **{status: _error(status) for status in COMMON_ERRORS}}
    for status, text in sorted((errors or {}).items()):
        out[status] = {"model": ErrorBody, "description": text, "headers": _REQUEST_ID_HEADER}
    return out


SECURITY_DESCRIPTION = f"""Every request is signed:

    Authorization: {SCHEME} mchid="…",key_id="…",nonce="…",timestamp="…",signature="…"
    signature = base64(HMAC-SHA256(key = the key's secret as UTF-8,
        message = METHOD \\n PATH?QUERY \\n TIMESTAMP \\n NONCE \\n BODY \\n))

PATH?QUERY is the request target exactly as sent (just the path without a query); BODY the
exact bytes sent (empty for GET). The timestamp (Unix seconds) must be within
±{TIMESTAMP_WINDOW_S} s of the server's clock; a nonce (at most {MAX_NONCE_LEN} characters)
is accepted once. Any failure is 401. src/paygrid/api/client.py is a complete client."""


# --- the document -------------------------------------------------------------------------
def install(app: FastAPI) -> None:
    """Serve the finished document at /openapi.json (and so in /docs)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = finish(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _, defs = models_json_schema(
        [(CreatePaymentIn, "validation"), (CreateRefundIn, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas.update(defs["$defs"])
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": SECURITY_DESCRIPTION,
        }
    }
    document["security"] = [{SECURITY_SCHEME: []}]
    for path_item in document.get("paths", {}).values():
        for op in path_item.values():
            op["responses"].pop("422", None)
            if "parameters" in op:
                op["parameters"] = _last_of_each(op["parameters"])
    return document


def _last_of_each(parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI lists a handler's path parameter; the route's own declaration comes after it
    and replaces it."""
    by_key = {(p["name"], p["in"]): p for p in parameters}
    return list(by_key.values())
