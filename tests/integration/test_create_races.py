"""50-way races on POST /v1/payments against PostgreSQL: the same out_trade_no and the same
Idempotency-Key, with the same and with different bodies, and the same out_trade_no under
different keys. Whatever the interleaving: one payment, one channel order at the sandbox, one
201, the rest replays (201 + Idempotent-Replayed), 200 for the same payment, or 409 with a
documented code, and never a 5xx."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paygrid.api.client import MerchantClient
from paygrid.storage.schema import payments
from tests.conftest import PlatformFactory
from tests.support import MerchantReceiver, PostgresServer, RunningPlatform

pytestmark = [pytest.mark.timeout(300), pytest.mark.postgres]
WAYS = 50
IN_PROGRESS = "IDEMPOTENCY_REQUEST_IN_PROGRESS"


def order(merchant: MerchantReceiver, out_trade_no: str, variant: int = 0) -> dict[str, Any]:
    return {
        "out_trade_no": out_trade_no,
        "amount": {"total": 1200 + variant, "currency": "CNY"},
        "description": f"race {variant}",
        "notify_url": merchant.url,
        "channel": "wechatpay",
        "method": "native",
    }


def race(client: MerchantClient, requests: list[tuple[dict[str, Any], str | None]]) -> list[Any]:
    """Send all requests at once (a barrier releases them together)."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[dict[str, Any], str | None]) -> httpx.Response:
        barrier.wait(timeout=60)
        return client.create_payment(request[0], idempotency_key=request[1])

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def settle(
    running: RunningPlatform,
    responses: list[httpx.Response],
    out_trade_no: str,
    refusals: set[str],
) -> Counter[str]:
    """Assert the outcome of one race; return what each response was, for the report."""
    seen: Counter[str] = Counter()
    assert [r.status_code for r in responses if r.status_code >= 500] == [], [
        r.text for r in responses if r.status_code >= 500
    ]
    first = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(first) == 1, Counter(r.status_code for r in responses)
    winner = first[0].json()
    assert winner["status"] == "PAYING" and winner["code_url"], winner
    for r in responses:
        if r.status_code in (200, 201):
            replayed = r.headers.get("idempotent-replayed") == "true"
            seen["replayed" if replayed else str(r.status_code)] += 1
            body = r.json()
            assert body["payment_id"] == winner["payment_id"], body
            assert body["code_url"] == winner["code_url"], body  # the order is placed
            if replayed:
                assert r.status_code == 201 and r.content == first[0].content
        else:
            assert r.status_code == 409, r.text
            error = r.json()
            assert error["code"] in refusals, error
            assert error["message"] and error["request_id"].startswith("req_"), error
            seen[error["code"]] += 1
    db = running.database()
    try:
        with db.read() as conn:
            stored = conn.execute(
                select(func.count()).where(payments.c.out_trade_no == out_trade_no)
            ).scalar_one()
    finally:
        db.dispose()
    assert stored == 1
    orders = running.sandbox("GET", "/sandbox/orders?limit=1000").json()["orders"]
    assert [o["out_trade_no"] for o in orders].count(winner["payment_id"]) == 1
    return seen


@pytest.fixture
def running(platform_factory: PlatformFactory, postgres: PostgresServer) -> RunningPlatform:
    return platform_factory(postgres.create_database("r_" + uuid.uuid4().hex[:12]))


@pytest.mark.parametrize(
    ("scenario", "refusals"),
    [
        ("same key, same body", {IN_PROGRESS}),
        ("same key, other bodies", {IN_PROGRESS, "IDEMPOTENCY_KEY_REUSED"}),
        ("other keys, same body", set()),
        ("other keys, other bodies", {"DUPLICATE_OUT_TRADE_NO"}),
    ],
)
def test_parallel_creates(
    scenario: str, refusals: set[str], running: RunningPlatform, merchant: MerchantReceiver
) -> None:
    client = running.client()
    client.http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=WAYS))
    out_trade_no = "race-" + uuid.uuid4().hex[:10]
    same_key = scenario.startswith("same key")
    same_body = scenario.endswith("same body")
    requests = [
        (
            order(merchant, out_trade_no, 0 if same_body else i),
            f"key-{out_trade_no}" if same_key else f"key-{out_trade_no}-{i}",
        )
        for i in range(WAYS)
    ]
    seen = settle(running, race(client, requests), out_trade_no, refusals)
    if same_key:  # under one key: the first response, its replays or a refusal, nothing else
        assert seen["200"] == 0, seen
    if scenario == "other keys, same body":
        assert seen == Counter({"201": 1, "200": WAYS - 1}), seen
    orders = running.sandbox("GET", "/sandbox/orders?limit=1000").json()["orders"]
    assert len(orders) == 1, orders  # no channel order for a payment that was never created
