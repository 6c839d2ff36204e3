"""50 refund requests at once against one payment, each with its own out_refund_no, together
above the amount paid, from 50 real HTTP clients in parallel: the platform never refunds more
than was paid, on SQLite and PostgreSQL in the embedded profile and in the production profile
(a process per context, PostgreSQL, NATS). Exactly as many refunds are accepted as fit, the
rest are 409 REFUND_EXCEEDS_REMAINING, never a 5xx; the channel gives back exactly what
paygrid accepted, and `paygrid check` holds."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygrid.channels import registry
from paygrid.channels.ports import RefundState
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, wait_status
from tests.support import MerchantReceiver, RunningPlatform, pg_bin, start_prod_platform, wait_until

pytestmark = pytest.mark.timeout(400)
WAYS = 50
TOTAL = 10_000
EACH = 300  # 50 x 3.00 = 150.00 asked of 100.00: 33 fit (99.00), 17 do not


def race(
    running: RunningPlatform, payment_id: str, same_no: bool = False, same_body: bool = True
) -> list[httpx.Response]:
    """Every request from its own client and connection, released together by a barrier."""
    barrier = threading.Barrier(WAYS)
    tag = uuid.uuid4().hex[:8]

    def send(n: int) -> httpx.Response:
        client = running.client()
        client.http = httpx.Client(timeout=60)
        body = {
            "payment_id": payment_id,
            "out_refund_no": f"race-{tag}" if same_no else f"race-{tag}-{n}",
            "amount": EACH if same_body else EACH + n,
        }
        barrier.wait(timeout=60)
        try:
            return client.request("POST", "/v1/refunds", body)
        finally:
            client.http.close()

    with ThreadPoolExecutor(WAYS) as pool:
        return list(pool.map(send, range(WAYS)))


def paid(
    running: RunningPlatform, merchant: MerchantReceiver, channel: str = "wechatpay"
) -> dict[str, Any]:
    client = running.client()
    payment = client.create_payment(
        order(
            merchant,
            amount={"total": TOTAL, "currency": "CNY"},
            items=None,
            discounts=None,
            **registry.spec(channel).test_order(),
        )
    ).json()
    body = registry.spec(channel).sandbox_pay(payment, "SUCCESS")
    assert running.channel_sandbox(channel, "POST", "/sandbox/pay", body).status_code == 200
    return wait_status(client, payment["payment_id"], "SUCCESS", timeout=60)


def settle(running: RunningPlatform, merchant: MerchantReceiver, channel: str) -> None:
    client = running.client()
    payment = paid(running, merchant, channel)

    responses = race(running, payment["payment_id"])
    errors = [r.text for r in responses if r.status_code >= 500]
    assert errors == []
    accepted = [r.json() for r in responses if r.status_code == 201]
    refused = Counter(r.json()["code"] for r in responses if r.status_code != 201)
    assert sum(r["amount"] for r in accepted) <= TOTAL  # never over-refunded
    assert len(accepted) == TOTAL // EACH, refused  # and every refund that fits is taken
    assert refused == Counter({"REFUND_EXCEEDS_REMAINING": WAYS - TOTAL // EACH})
    assert len({r["refund_id"] for r in accepted}) == len(accepted)

    def all_succeeded() -> bool:
        shown = client.get_payment(payment["payment_id"]).json()
        return bool(shown["refunded_amount"] == EACH * len(accepted))

    wait_until(all_succeeded, timeout=120, interval=0.5)
    shown = client.get_payment(payment["payment_id"]).json()
    assert Counter(r["status"] for r in shown["refunds"]) == Counter({"SUCCESS": len(accepted)})
    ids = [r["refund_id"] for r in accepted]
    given = _refunded_at_channel(running, channel, payment["payment_id"], ids)
    assert given == EACH * len(accepted)
    wait_until(
        lambda: running.paygrid("check", "--grace-seconds", "0").returncode == 0,
        timeout=90,
        interval=1.0,
    )


def _refunded_at_channel(
    running: RunningPlatform, name: str, payment_id: str, refund_ids: list[str]
) -> int:
    """What the channel itself says it gave back, asked with the merchant's own credentials."""
    creds = running.channel_sandbox(name, "GET", "/sandbox/credentials").json()
    channel = registry.spec(name).build_adapter(creds, running.sandbox_urls[name])
    given = 0
    for refund_id in refund_ids:
        said = channel.query_refund(refund_id, payment_id)
        assert said.state == RefundState.SUCCESS and said.amount is not None, said
        given += said.amount.minor
    return given


@pytest.mark.parametrize("channel", registry.NAMES)
def test_parallel_refunds_never_exceed_the_payment_embedded(
    platform_factory: PlatformFactory,
    database_url: str | None,
    merchant: MerchantReceiver,
    channel: str,
) -> None:
    settle(platform_factory(database_url), merchant, channel)


@pytest.mark.parametrize("same_body", [True, False], ids=["same body", "other bodies"])
def test_parallel_repeats_of_one_out_refund_no_make_one_refund(
    platform_factory: PlatformFactory,
    database_url: str | None,
    merchant: MerchantReceiver,
    same_body: bool,
) -> None:
    running = platform_factory(database_url)
    payment = paid(running, merchant)
    responses = race(running, payment["payment_id"], same_no=True, same_body=same_body)
    assert [r.text for r in responses if r.status_code >= 500] == []
    first = [r.json() for r in responses if r.status_code == 201]
    assert len(first) == 1, Counter(r.status_code for r in responses)
    for r in responses:
        if r.status_code == 200:
            assert r.json()["refund_id"] == first[0]["refund_id"]
        elif r.status_code == 409:
            assert not same_body and r.json()["code"] == "DUPLICATE_OUT_REFUND_NO", r.text
        else:
            assert r.status_code == 201
    shown = running.client().get_payment(payment["payment_id"]).json()
    assert [x["refund_id"] for x in shown["refunds"]] == [first[0]["refund_id"]]


@pytest.mark.postgres
def test_parallel_refunds_never_exceed_the_payment_in_production(
    tmp_path: Path, merchant: MerchantReceiver
) -> None:
    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI")
        pytest.skip("PostgreSQL binaries not installed")
    running = start_prod_platform(tmp_path / "prod")
    try:
        settle(running, merchant, "wechatpay")
    finally:
        running.stop()
