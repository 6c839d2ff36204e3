"""The merchant API contract of DESIGN.md from the outside: signatures, idempotency,
out_trade_no, the error body — and every refused request leaves nothing behind."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paygrid.api.client import MerchantClient
from paygrid.storage.schema import (
    idempotency_keys,
    ledger_entries,
    outbox,
    payment_transitions,
    payments,
)
from tests.conftest import PlatformFactory
from tests.support import MerchantReceiver, RunningPlatform

pytestmark = pytest.mark.timeout(180)
TABLES = (payments, idempotency_keys, outbox, payment_transitions, ledger_entries)


def body(merchant: MerchantReceiver, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "out_trade_no": "o-" + uuid.uuid4().hex[:12],
        "amount": {"total": 1200, "currency": "CNY"},
        "description": "book",
        "notify_url": merchant.url,
        "items": [{"sku": "B1", "name": "book", "quantity": 1, "unit_amount": 1200}],
    }
    base.update(changes)
    return base


def counts(running: RunningPlatform) -> dict[str, int]:
    db = running.database()
    with db.transaction() as conn:
        out = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in TABLES
        }
    db.dispose()
    return out


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err: dict[str, Any] = response.json()
    assert err["code"] == code, err
    assert err["message"] and err["request_id"].startswith("req_")
    return err


def test_bad_requests_are_refused_and_change_nothing(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    creds = running.credentials
    before = counts(running)
    url = running.api_url + "/v1/payments"
    raw = json.dumps(body(merchant)).encode()

    # --- 401: unsigned, badly signed, wrong key, stale, replayed -------------------------
    assert_error(httpx.post(url, content=raw), 401, "UNAUTHORIZED")
    assert_error(
        httpx.post(url, content=raw, headers={"Authorization": "Basic abc"}), 401, "UNAUTHORIZED"
    )
    wrong = MerchantClient(running.api_url, creds["mchid"], creds["key_id"], "not-the-secret")
    assert_error(wrong.create_payment(body(merchant)), 401, "SIGNATURE_INVALID")
    unknown = MerchantClient(running.api_url, "m0000000000", creds["key_id"], creds["secret"])
    assert_error(unknown.create_payment(body(merchant)), 401, "UNAUTHORIZED")
    stale = client.request("POST", "/v1/payments", body(merchant), timestamp=int(time.time()) - 301)
    assert_error(stale, 401, "TIMESTAMP_EXPIRED")
    future = client.request(
        "POST", "/v1/payments", body(merchant), timestamp=int(time.time()) + 301
    )
    assert_error(future, 401, "TIMESTAMP_EXPIRED")
    ok = client.request("GET", "/v1/payments?out_trade_no=none", nonce="once-only")
    assert_error(ok, 404, "PAYMENT_NOT_FOUND")
    replay = client.request("GET", "/v1/payments?out_trade_no=none", nonce="once-only")
    assert_error(replay, 401, "NONCE_REUSED")
    # A signature over another path or body does not carry over.
    signed_other = client.request("POST", "/v1/payments", raw_body=raw)
    assert signed_other.status_code == 201  # (this one is good: it creates a payment)
    before = counts(running)
    tampered = httpx.post(
        url,
        content=raw.replace(b"1200", b"1201"),
        headers={
            "Authorization": signed_other.request.headers["authorization"],
            "Content-Type": "application/json",
        },
    )
    assert_error(tampered, 401, "SIGNATURE_INVALID")

    # --- 400: a code naming the field ------------------------------------------------------
    cases: list[tuple[Callable[[], httpx.Response], str]] = [
        (lambda: client.request("POST", "/v1/payments", raw_body=b"{not json"), "MALFORMED_JSON"),
        (lambda: client.request("POST", "/v1/payments", raw_body=b"[1,2]"), "MALFORMED_JSON"),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": 12.5, "currency": "CNY"}, items=None)
            ),
            "INVALID_AMOUNT",
        ),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": 1200.0, "currency": "CNY"})
            ),
            "INVALID_AMOUNT",
        ),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": "1200", "currency": "CNY"})
            ),
            "INVALID_AMOUNT",
        ),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": -5, "currency": "CNY"}, items=None)
            ),
            "INVALID_AMOUNT",
        ),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": 0, "currency": "CNY"}, items=None)
            ),
            "INVALID_AMOUNT",
        ),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": 1200, "currency": "XXY"})
            ),
            "INVALID_CURRENCY",
        ),
        (
            lambda: client.create_payment(
                body(merchant, amount={"total": 1200, "currency": "cny"})
            ),
            "INVALID_CURRENCY",
        ),
        (
            lambda: client.create_payment(body(merchant, notify_url="ftp://x/y")),
            "INVALID_NOTIFY_URL",
        ),
        (
            lambda: client.create_payment(body(merchant, notify_url="not a url")),
            "INVALID_NOTIFY_URL",
        ),
        (
            lambda: client.create_payment(body(merchant, return_url="javascript:alert(1)")),
            "INVALID_RETURN_URL",
        ),
        (
            lambda: client.create_payment(
                body(
                    merchant,
                    items=[{"sku": "B1", "name": "book", "quantity": 2, "unit_amount": 1200}],
                )
            ),
            "ITEMS_TOTAL_MISMATCH",
        ),
        (
            lambda: client.create_payment(
                body(merchant, discounts=[{"name": "coupon", "amount": 100}])
            ),
            "ITEMS_TOTAL_MISMATCH",
        ),
        (
            lambda: client.create_payment(
                body(
                    merchant,
                    items=[{"sku": "B1", "name": "book", "quantity": 1.0, "unit_amount": 1200}],
                )
            ),
            "INVALID_ITEMS",
        ),
        (lambda: client.create_payment(body(merchant, description="")), "INVALID_DESCRIPTION"),
        (
            lambda: client.create_payment(
                {k: v for k, v in body(merchant).items() if k != "out_trade_no"}
            ),
            "INVALID_OUT_TRADE_NO",
        ),
        (lambda: client.create_payment(body(merchant, channel="bitcoin")), "INVALID_CHANNEL"),
        (lambda: client.create_payment(body(merchant, method="native")), "INVALID_CHANNEL"),
        (
            lambda: client.create_payment(body(merchant, expire_at="2020-01-01T00:00:00+08:00")),
            "INVALID_EXPIRE_AT",
        ),
        (
            lambda: client.create_payment(body(merchant, expire_at="2030-01-01T00:00:00")),
            "INVALID_EXPIRE_AT",
        ),
        (
            lambda: client.create_payment(
                body(merchant, channel="wechatpay", amount={"total": 1200, "currency": "USD"})
            ),
            "UNSUPPORTED_CURRENCY",
        ),
        (lambda: client.request("GET", "/v1/payments"), "INVALID_OUT_TRADE_NO"),
    ]
    for send, code in cases:
        err = assert_error(send(), 400, code)
        if code.startswith(("INVALID_", "UNSUPPORTED_")) and code != "INVALID_CHANNEL":
            assert err.get("field"), err
    assert_error(
        client.request("POST", "/v1/payments", raw_body=b"{" + b" " * 70_000 + b"}"),
        413,
        "BODY_TOO_LARGE",
    )
    assert_error(client.get_payment("pay_nope"), 404, "PAYMENT_NOT_FOUND")
    assert_error(client.request("GET", "/v1/nowhere"), 404, "NOT_FOUND")
    assert counts(running) == before


def test_idempotency_and_out_trade_no(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    first_body = body(merchant)
    first = client.create_payment(first_body, idempotency_key="k-1")
    assert first.status_code == 201
    again = client.create_payment(first_body, idempotency_key="k-1")
    assert again.status_code == 201
    assert again.content == first.content  # the original response, byte for byte
    other = client.create_payment(body(merchant), idempotency_key="k-1")
    assert_error(other, 409, "IDEMPOTENCY_KEY_REUSED")

    # out_trade_no: same body -> the existing payment; another body -> 409.
    same = client.create_payment(first_body)
    assert same.status_code == 200
    assert same.json()["payment_id"] == first.json()["payment_id"]
    changed = dict(first_body, description="another book")
    assert_error(client.create_payment(changed), 409, "DUPLICATE_OUT_TRADE_NO")
    # A refused request does not burn its Idempotency-Key.
    bad = client.create_payment(dict(body(merchant), description=""), idempotency_key="k-2")
    assert_error(bad, 400, "INVALID_DESCRIPTION")
    fresh = client.create_payment(body(merchant), idempotency_key="k-2")
    assert fresh.status_code == 201

    # Another merchant may use the same out_trade_no.
    created = running.paygrid("merchant", "create", "--name", "Second Shop", "--json")
    assert created.returncode == 0, created.stderr
    second = json.loads(created.stdout)
    assert set(second) >= {"mchid", "key_id", "secret"}
    other_client = MerchantClient(
        running.api_url, second["mchid"], second["key_id"], second["secret"]
    )
    theirs = other_client.create_payment(first_body)
    assert theirs.status_code == 201
    assert theirs.json()["payment_id"] != first.json()["payment_id"]
    # ...and cannot see ours.
    assert_error(other_client.get_payment(first.json()["payment_id"]), 404, "PAYMENT_NOT_FOUND")


def test_openapi_and_health(platform_factory: PlatformFactory) -> None:
    running = platform_factory()
    assert httpx.get(running.api_url + "/healthz").json() == {"status": "ok"}
    spec = httpx.get(running.api_url + "/openapi.json").json()
    assert "/v1/payments" in spec["paths"]
    assert "/v1/notifications/{notify_id}/resend" in spec["paths"]
