"""Defect 5 (issue 7): no input may produce a 5xx. Each hostile input below, on SQLite and on
PostgreSQL, gets its 4xx with the documented error body, and changes nothing.

One platform per database serves every case of this module (starting one per case would
take minutes); each case still runs on both databases."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import func, select, text

from paygrid.api.auth import authorization_header
from paygrid.api.client import MerchantClient
from paygrid.storage.schema import idempotency_keys, notifications, outbox, payments
from tests.conftest import PlatformFactory
from tests.support import PostgresServer, RunningPlatform, start_platform

pytestmark = pytest.mark.timeout(300)
TABLES = (payments, idempotency_keys, outbox, notifications)
NOTIFY_URL = "http://127.0.0.1:9/notify"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    """The database_url matrix of tests/conftest.py, at module scope."""
    url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database("t_" + uuid.uuid4().hex[:12])
    platform = start_platform(tmp_path_factory.mktemp(f"bad-input-{request.param}"), url)
    yield platform
    platform.stop()


@dataclass
class Ctx:
    running: RunningPlatform
    client: MerchantClient
    payment: dict[str, Any]  # an existing payment of the demo merchant

    @property
    def token(self) -> str:
        return str(self.payment["cashier_url"]).split("t=", 1)[1]


@pytest.fixture(scope="module")
def ctx(running: RunningPlatform) -> Ctx:
    client = running.client()
    created = client.create_payment(order())
    assert created.status_code == 201, created.text
    return Ctx(running, client, created.json())


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "out_trade_no": "o-" + uuid.uuid4().hex[:12],
        "amount": {"total": 900, "currency": "CNY"},
        "description": "book",
        "notify_url": NOTIFY_URL,
        "items": [{"sku": "B1", "name": "book", "quantity": 1, "unit_amount": 900}],
    }
    body.update(changes)
    return body


def counts(running: RunningPlatform) -> dict[str, int]:
    db = running.database()
    try:
        with db.read() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in TABLES
            }
    finally:
        db.dispose()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["message"] and "Traceback" not in body["message"], body
    assert body["request_id"] and response.headers["request-id"] == body["request_id"], body


def signed_raw(ctx: Ctx, method: str, target: str, raw: bytes = b"") -> httpx.Response:
    return ctx.client.request(method, target, raw_body=raw)


def with_timestamp(ctx: Ctx, timestamp: str) -> httpx.Response:
    """A correctly formed Authorization header whose timestamp is ``timestamp``."""
    c = ctx.client
    header = (
        f'PAYGRID-HMAC-SHA256 mchid="{c.mchid}",key_id="{c.key_id}",nonce="{uuid.uuid4().hex}",'
        f'timestamp="{timestamp}",signature="c2lnbmF0dXJl"'
    )
    return httpx.get(ctx.running.api_url + "/v1/payments/x", headers={"Authorization": header})


def with_idempotency_key(ctx: Ctx, key: bytes) -> httpx.Response:
    """A signed create whose Idempotency-Key header carries raw (latin-1) bytes."""
    raw = json.dumps(order()).encode()
    c = ctx.client
    auth = authorization_header(
        c.mchid, c.key_id, c.secret, "POST", "/v1/payments", raw, uuid.uuid4().hex
    )
    headers = {"Authorization": auth.encode(), "Idempotency-Key": key}
    return httpx.post(ctx.running.api_url + "/v1/payments", content=raw, headers=headers)


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# (name, request, status, code); each request gets the context and returns the response.
Case = tuple[str, Callable[[Ctx], httpx.Response], int, str]
NUL = "\x00"

CASES: list[Case] = [
    # --- the signature check -------------------------------------------------------------
    ("timestamp-400-digits", lambda c: with_timestamp(c, "9" * 400), 401, "TIMESTAMP_INVALID"),
    ("timestamp-exponent", lambda c: with_timestamp(c, "17e8"), 401, "TIMESTAMP_INVALID"),
    (
        "timestamp-signed",
        lambda c: with_timestamp(c, f"+{int(time.time())}"),
        401,
        "TIMESTAMP_INVALID",
    ),
    (
        "signature-non-ascii",
        lambda c: httpx.get(
            c.running.api_url + "/v1/payments/x",
            headers={
                "Authorization": (
                    f'PAYGRID-HMAC-SHA256 mchid="{c.client.mchid}",key_id="{c.client.key_id}",'
                    f'nonce="n{uuid.uuid4().hex}",timestamp="{int(time.time())}",'
                    'signature="\xe9\xe9"'
                ).encode("latin-1")
            },
        ),
        401,
        "SIGNATURE_INVALID",
    ),
    # --- channel callbacks --------------------------------------------------------------
    (
        "callback-unknown-channel",
        lambda c: httpx.post(c.running.api_url + "/callbacks/bitcoin", content=b"{}"),
        404,
        "NOT_FOUND",
    ),
    (
        "callback-nul-channel",
        lambda c: httpx.post(c.running.api_url + "/callbacks/%00", content=b"{}"),
        404,
        "NOT_FOUND",
    ),
    # --- JSON nested 1,000 deep ------------------------------------------------------------
    (
        "json-nested-objects",
        lambda c: signed_raw(c, "POST", "/v1/payments", nested(1000)),
        400,
        "MALFORMED_JSON",
    ),
    (
        "json-nested-arrays",
        lambda c: signed_raw(c, "POST", "/v1/payments", b"[" * 1000 + b"]" * 1000),
        400,
        "MALFORMED_JSON",
    ),
    (
        "json-nested-in-a-field",
        lambda c: signed_raw(
            c,
            "POST",
            "/v1/payments",
            json.dumps(order())[:-1].encode() + b',"extra":' + nested(1000) + b"}",
        ),
        400,
        "MALFORMED_JSON",
    ),
    (
        "json-nested-close",
        lambda c: signed_raw(
            c, "POST", f"/v1/payments/{c.payment['payment_id']}/close", nested(1000)
        ),
        400,
        "MALFORMED_JSON",
    ),
    (
        "json-lone-surrogate",
        lambda c: signed_raw(
            c, "POST", "/v1/payments", json.dumps(order(description="\ud800")).encode()
        ),
        400,
        "MALFORMED_JSON",
    ),
    # --- bill dates ----------------------------------------------------------------------
    *[
        (
            f"bill-{name}",
            (lambda c, d=day: signed_raw(c, "GET", f"/v1/bills/{d}")),
            400,
            "INVALID_BILL_DATE",
        )
        for name, day in [
            ("0001-01-01", "0001-01-01"),
            ("9999-12-31", "9999-12-31"),
            ("feb-30", "2024-02-30"),
            ("basic-format", "20240101"),
            ("week-date", "2024-W01-1"),
            ("nul", "2024-01-01%00"),
        ]
    ],
    # --- NUL and control characters in text fields -----------------------------------------
    *[
        (
            f"{field}-{label}",
            (lambda c, f=field, ch=char: c.client.create_payment(order(**{f: f"a{ch}b"}))),
            400,
            f"INVALID_{field.upper()}",
        )
        for field in ("description", "attach")
        for label, char in [
            ("nul", NUL),
            ("c0", "\x01"),
            ("tab", "\t"),
            ("newline", "\n"),
            ("del", "\x7f"),
            ("c1", "\x85"),
            ("line-separator", "\u2028"),
            ("bidi-override", "\u202e"),
        ]
    ],
    *[
        (
            f"notify_url-{label}",
            (lambda c, u=url: c.client.create_payment(order(notify_url=u))),
            400,
            "INVALID_NOTIFY_URL",
        )
        for label, url in [
            ("nul", f"http://127.0.0.1:9/n{NUL}"),
            ("nul-host", f"http://127.0.0.1{NUL}.example/n"),
            ("space", "http://127.0.0.1:9/a b"),
        ]
    ],
    (
        "return_url-nul",
        lambda c: c.client.create_payment(order(return_url=f"http://127.0.0.1/{NUL}")),
        400,
        "INVALID_RETURN_URL",
    ),
    (
        "item-name-nul",
        lambda c: c.client.create_payment(
            order(items=[{"sku": "B1", "name": f"b{NUL}", "quantity": 1, "unit_amount": 900}])
        ),
        400,
        "INVALID_ITEMS",
    ),
    (
        "item-sku-nul",
        lambda c: c.client.create_payment(
            order(items=[{"sku": f"B{NUL}", "name": "b", "quantity": 1, "unit_amount": 900}])
        ),
        400,
        "INVALID_ITEMS",
    ),
    (
        "discount-name-nul",
        lambda c: c.client.create_payment(
            order(
                amount={"total": 800, "currency": "CNY"},
                discounts=[{"name": f"c{NUL}", "amount": 100}],
            )
        ),
        400,
        "INVALID_DISCOUNTS",
    ),
    (
        "out_trade_no-nul",
        lambda c: c.client.create_payment(order(out_trade_no=f"o{NUL}")),
        400,
        "INVALID_OUT_TRADE_NO",
    ),
    # --- NUL and control characters in paths and queries: never reach the database ----------
    (
        "payment-id-nul",
        lambda c: signed_raw(c, "GET", f"/v1/payments/{c.payment['payment_id']}%00"),
        404,
        "PAYMENT_NOT_FOUND",
    ),
    (
        "payment-id-control",
        lambda c: signed_raw(c, "GET", "/v1/payments/pay_%01%7F"),
        404,
        "PAYMENT_NOT_FOUND",
    ),
    (
        "close-payment-id-nul",
        lambda c: signed_raw(c, "POST", "/v1/payments/pay_%00/close", b"{}"),
        404,
        "PAYMENT_NOT_FOUND",
    ),
    (
        "out_trade_no-lookup-nul",
        lambda c: signed_raw(c, "GET", "/v1/payments?out_trade_no=o%00"),
        400,
        "INVALID_OUT_TRADE_NO",
    ),
    (
        "out_trade_no-lookup-non-ascii",
        lambda c: signed_raw(c, "GET", "/v1/payments?out_trade_no=%C3%A9%E2%80%AE"),
        400,
        "INVALID_OUT_TRADE_NO",
    ),
    (
        "notifications-filter-nul",
        lambda c: signed_raw(c, "GET", "/v1/notifications?payment_id=pay_%00"),
        400,
        "INVALID_PAYMENT_ID",
    ),
    (
        "notification-id-nul",
        lambda c: signed_raw(c, "POST", "/v1/notifications/ntf_%00/resend", b"{}"),
        404,
        "NOTIFICATION_NOT_FOUND",
    ),
    (
        "idempotency-key-control",
        lambda c: with_idempotency_key(c, b"k\x85k"),  # a C1 control character
        400,
        "INVALID_IDEMPOTENCY_KEY",
    ),
]


@pytest.mark.parametrize(("name", "send", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_a_clean_4xx(
    ctx: Ctx, name: str, send: Callable[[Ctx], httpx.Response], status: int, code: str
) -> None:
    before = counts(ctx.running)
    assert_error(send(ctx), status, code)
    assert counts(ctx.running) == before


# --- the cashier: HTML pages, its JSON status; a 404, never a 500 ------------------------------
@pytest.mark.parametrize(
    "token", ["%C3%A9", "%E2%80%AE", "%00", "%FF"], ids=["e-acute", "bidi", "nul", "latin1"]
)
def test_cashier_refuses_a_bad_token_with_404(ctx: Ctx, token: str) -> None:
    base = f"{ctx.running.cashier_url}/pay/{ctx.payment['payment_id']}"
    for path in (f"?t={token}", f"/qr.png?t={token}"):
        page = httpx.get(base + path)
        assert page.status_code == 404, (path, page.text)
    status = httpx.get(f"{base}/status?t={token}")
    assert status.status_code == 404 and status.json() == {"code": "PAYMENT_NOT_FOUND"}
    chosen = httpx.post(base + "/method", data={"t": unquote(token), "method": "wechatpay"})
    assert chosen.status_code == 404
    assert httpx.get(f"{base}?t={ctx.token}").status_code == 200  # the real token still works


@pytest.mark.parametrize("payment_id", ["pay_%00", "%00", "pay_" + "%C3%A9" * 26])
def test_cashier_refuses_a_bad_payment_id_with_404(ctx: Ctx, payment_id: str) -> None:
    base = f"{ctx.running.cashier_url}/pay/{payment_id}"
    assert httpx.get(f"{base}?t={ctx.token}").status_code == 404
    assert httpx.get(f"{base}/status?t={ctx.token}").status_code == 404


def test_a_callback_with_a_400_digit_timestamp_is_refused_not_a_500(ctx: Ctx) -> None:
    """The channel's own signature check (Wechatpay-Timestamp) must not overflow either."""
    headers = {
        "Wechatpay-Timestamp": "9" * 400,
        "Wechatpay-Nonce": "n" * 32,
        "Wechatpay-Serial": "PUB_KEY_ID_0000",
        "Wechatpay-Signature": "c2lnbmF0dXJl",
        "Content-Type": "application/json",
    }
    answer = httpx.post(
        ctx.running.api_url + "/callbacks/wechatpay", content=b"{}", headers=headers
    )
    # A timestamp that is no time is a failed signature check (docs/wechatpay.md).
    assert answer.status_code == 401, answer.text
    assert answer.json()["code"] == "SIGN_ERROR"


def test_the_platform_log_has_no_traceback(ctx: Ctx) -> None:
    """After all of the above (this runs last in the module for each database)."""
    log = Path(ctx.running.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


# --- the last resort: a bug still answers with the documented body -----------------------------
def test_an_unexpected_error_is_still_the_documented_error_body(
    platform_factory: PlatformFactory,
) -> None:
    """A broken schema (a table gone) is no input's doing, and no handler expects it: the
    answer is still JSON with a code and the request id, which the log line carries too."""
    running = platform_factory()
    db = running.database()
    with db.transaction() as conn:
        conn.execute(text("DROP TABLE api_nonces"))
    db.dispose()
    answer = running.client().get_payment("pay_01M8SVVAKE003MCZ7FDGNWTAWZ")
    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == "INTERNAL_ERROR" and "api_nonces" not in body["message"], body
    assert body["request_id"].startswith("req_")
    assert answer.headers["request-id"] == body["request_id"]
    assert body["request_id"] in running.log()
