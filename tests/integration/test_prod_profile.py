"""The production profile for real: a process per context over PostgreSQL and NATS JetStream,
started and supervised by `paygrid up --profile prod`; processes killed with SIGKILL come back
and nothing is lost or counted twice."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, RunningPlatform, start_prod_platform, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.postgres]


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[RunningPlatform]:
    from tests.support import pg_bin

    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI")
        pytest.skip("PostgreSQL binaries not installed")
    running = start_prod_platform(tmp_path / "prod")
    yield running
    running.stop()


def processes(running: RunningPlatform) -> dict[str, dict[str, Any]]:
    body = json.loads((running.data_dir / "status.json").read_text())
    return {p["name"]: p for p in body["processes"]}


def kill(running: RunningPlatform, name: str) -> int:
    pid = int(processes(running)[name]["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_prod_profile_pays_and_survives_kills(
    prod: RunningPlatform, merchant: MerchantReceiver
) -> None:
    client = prod.client()
    procs = processes(prod)
    assert {
        "postgres",
        "nats",
        "api",
        "cashier",
        "gateway",
        "core",
        "relay",
        "ledger",
        "notifier",
        "scheduler",
    } <= set(procs)
    assert all(p["alive"] for p in procs.values())
    status = prod.paygrid("status", database=False)
    assert status.returncode == 0 and "relay" in status.stdout

    first = client.create_payment(order(merchant)).json()
    pay(prod, first["code_url"])
    wait_status(client, first["payment_id"], "SUCCESS")
    wait_until(lambda: len(merchant.received) == 1, timeout=30)

    # JSON logs: the callback's request id follows the payment into the ledger's process.
    def lines(role: str) -> list[dict[str, Any]]:
        text = (prod.data_dir / "logs" / f"{role}.log").read_text()
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]

    def about(role: str) -> list[dict[str, Any]]:
        return [x for x in lines(role) if x.get("payment_id") == first["payment_id"]]

    wait_until(lambda: bool(about("gateway")) and bool(about("ledger")), timeout=30)
    callback_ids = {x.get("request_id") for x in about("gateway")}
    assert callback_ids and None not in callback_ids
    assert {x.get("request_id") for x in about("ledger")} <= callback_ids

    # Kill the ledger, the notifier and NATS; money keeps coming in meanwhile.
    for name in ("ledger", "notifier", "nats"):
        kill(prod, name)
    ids = []
    for _ in range(3):
        created = client.create_payment(order(merchant))
        assert created.status_code == 201, created.text
        pay(prod, created.json()["code_url"])
        ids.append(created.json()["payment_id"])
    for payment_id in ids:
        wait_status(client, payment_id, "SUCCESS", timeout=60)
    wait_until(lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) == 4, timeout=90)
    restarted = processes(prod)
    for name in ("ledger", "notifier", "nats"):
        assert restarted[name]["restarts"] >= 1 and restarted[name]["alive"], restarted[name]
        assert restarted[name]["last_exit"] == -signal.SIGKILL

    # Kill PostgreSQL: the API answers 503 with a code, then recovers.
    kill(prod, "postgres")
    body = order(merchant)
    seen_503 = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            r = client.create_payment(body)
        except httpx.HTTPError:
            continue
        if r.status_code == 503:
            assert r.json()["code"] == "DATABASE_UNAVAILABLE", r.text
            assert httpx.get(f"{prod.api_url}/readyz").status_code == 503
            seen_503 = True
        if r.status_code in (200, 201):
            break
        time.sleep(0.2)
    assert r.status_code in (200, 201), r.text
    pay(prod, r.json()["code_url"])
    wait_status(client, r.json()["payment_id"], "SUCCESS", timeout=60)
    wait_until(lambda: len({h["Paygrid-Notify-Id"] for h, _ in merchant.received}) == 5, timeout=90)
    assert processes(prod)["postgres"]["restarts"] >= 1
    assert seen_503  # the outage was visible as 503 DATABASE_UNAVAILABLE and in /readyz

    for role, port in (("api", prod.api_url),):
        assert httpx.get(f"{port}/readyz").status_code == 200, role
    metrics = httpx.get(f"{prod.ops_url}/metrics").text  # the api's operations port
    assert "paygrid_http_requests_total" in metrics
    assert httpx.get(f"{prod.api_url}/metrics").status_code == 404  # not on the public port

    def invariants_hold() -> bool:
        return prod.paygrid("check", "--grace-seconds", "0").returncode == 0

    wait_until(invariants_hold, timeout=60, interval=1.0)
