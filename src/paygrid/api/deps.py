"""What every route of the merchant API needs: the platform's services (:class:`ApiDeps`), the
caller authenticated over the exact bytes it signed (:meth:`ApiDeps.signed`), the payment core
called in a worker thread with its refusals as API errors (:func:`call`), the body as a JSON
object."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from paygrid.agreements.service import AgreementService
from paygrid.api.auth import MerchantKeys, Principal, authenticate
from paygrid.api.errors import PAYMENT_CODE_STATUS, ApiError
from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE
from paygrid.kernel.ids import is_id
from paygrid.merchants.vault import Vault
from paygrid.notify.service import NotifyService
from paygrid.notify.url_policy import UrlRefused
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import PaymentService
from paygrid.storage.database import Database

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ApiDeps:
    db: Database
    payments: PaymentService
    notify: NotifyService
    zone: str = DEFAULT_BUSINESS_ZONE
    _: KW_ONLY
    vault: Vault  # opens the merchants' sealed secrets
    data_dir: Path | None = None  # where the bills taken in are kept (per-SKU reports)
    keys: MerchantKeys = field(init=False)  # the merchants' keys, kept a short while
    agreements: AgreementService = field(init=False)  # 签约: over the same channels

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", MerchantKeys(self.db, self.vault))
        object.__setattr__(self, "agreements", AgreementService.over(self.db, self.payments))

    async def signed(self, request: Request) -> tuple[Principal, bytes]:
        """The merchant whose signature covers this request, and the body it signed."""
        body = await request.body()  # at most MAX_BODY_BYTES: BodyLimit refused anything more
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        principal = await run_in_threadpool(
            authenticate,
            self.keys,
            request.headers.get("authorization"),
            request.method,
            target,
            body,
        )
        return principal, body


async def call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; the payment core's refusals become API errors."""
    try:
        return await run_in_threadpool(fn, *args)
    except PaymentRejected as exc:
        raise ApiError(PAYMENT_CODE_STATUS.get(exc.code, 400), exc.code, exc.message) from None


def require_payment_id(payment_id: str) -> None:
    """A path that cannot name a payment is not looked up (nor are its bytes sent to SQL)."""
    if not is_id(payment_id, "pay"):
        raise ApiError(404, "PAYMENT_NOT_FOUND", "no such payment")


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else (including nesting deeper than the parser
    recurses) is 400 MALFORMED_JSON."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "MALFORMED_JSON", f"body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "MALFORMED_JSON", "body must be a JSON object")
    return parsed


def require_empty_object(body: bytes) -> None:
    if body.strip() in (b"", b"{}"):
        return
    json_object(body)


def parse_body(model: type[M], body: bytes) -> M:
    """The body as ``model``; the first error is 400 INVALID_<FIELD> naming the field."""
    json_object(body)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":  # e.g. nested too deep, or a lone surrogate
            raise ApiError(400, "MALFORMED_JSON", first["msg"]) from None
        code, field = field_code(tuple(first["loc"]))
        raise ApiError(400, code, f"{field}: {first['msg']}", field) from None


def field_code(loc: tuple[int | str, ...]) -> tuple[str, str]:
    names = [str(p) for p in loc if not isinstance(p, int)]
    field = ".".join(str(p) for p in loc)
    top = names[-1] if names and names[-1] == "currency" else (names[0] if names else "body")
    return f"INVALID_{top.upper()}", field


def check_notify_url(notify: NotifyService, url: str) -> None:
    """SSRF guard (notify/url_policy.py): no internal, credential-bearing or obfuscated URL."""
    try:
        notify.check_url(url)
    except UrlRefused as exc:
        raise ApiError(400, "INVALID_NOTIFY_URL", exc.message, "notify_url") from None
