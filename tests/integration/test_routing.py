"""Routing through real processes: `paygrid up`, the merchant API without a channel, rules and
weights put in force by the CLI while the platform runs (no restart), the decision recorded on
the payment for operators only, rollback, failover to the next channel when the chosen one
never accepted the order, and the breaker taking a failing channel out and probing it back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygrid.routing.service import RELOAD_INTERVAL_S
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order
from tests.support import MerchantReceiver, RunningPlatform

pytestmark = pytest.mark.timeout(240)

RULES = """\
[health]
min_calls = {min_calls}
max_failure_pct = 50
open_s = 2
probe_interval_s = 0.2
probe_successes = 2

[[rule]]
name = "qr"
methods = ["native"]
channels = ["alipay", "wechatpay"]
"""


def cli(running: RunningPlatform, *args: str) -> str:
    done = running.paygrid(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def apply_rules(running: RunningPlatform, tmp: Path, min_calls: int = 1000) -> None:
    path = tmp / "rules.toml"
    path.write_text(RULES.format(min_calls=min_calls))
    cli(running, "routing", "rules", "apply", str(path), "--by", "ops-alice", "--reason", "go")
    time.sleep(RELOAD_INTERVAL_S + 0.5)  # every process takes the new version within this


def routed(merchant: MerchantReceiver, bank: str | None = None, **extra: Any) -> dict[str, Any]:
    body = order(merchant, **{"method": "native", **extra})
    del body["channel"]
    if bank:
        body["payer"] = {"bank": bank}
    return body


def show(running: RunningPlatform, payment_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(cli(running, "payments", "show", payment_id, "--json"))
    return shown


def test_routed_payments_follow_rules_weights_and_rollback(
    platform_factory: PlatformFactory,
    database_url: str | None,
    merchant: MerchantReceiver,
    tmp_path: Path,
) -> None:
    running = platform_factory(database_url)
    client = running.client()
    refused = client.create_payment(routed(merchant))
    assert refused.status_code == 400 and refused.json()["code"] == "INVALID_CHANNEL"

    apply_rules(running, tmp_path)
    cheapest = client.create_payment(routed(merchant, "CCB"))
    assert cheapest.status_code == 201, cheapest.text
    assert cheapest.json()["channel"] == "wechatpay"  # 0.20% against Alipay's 0.60%
    assert cheapest.json()["status"] == "PAYING" and cheapest.json()["code_url"]

    cli(running, "routing", "set-weight", "--bank", "ICBC", "--channel", "alipay",
        "--percent", "100", "--by", "ops-bob", "--reason", "cut-over ICBC")  # fmt: skip
    time.sleep(RELOAD_INTERVAL_S + 0.5)
    icbc = client.create_payment(routed(merchant, "ICBC"))
    assert icbc.status_code == 201 and icbc.json()["channel"] == "alipay", icbc.text
    payment_id = icbc.json()["payment_id"]
    merchant_view = client.get_payment(payment_id).text
    for operator_only in ("route", "draw", "weights", "config_version"):
        assert operator_only not in merchant_view

    shown = show(running, payment_id)
    assert shown["payer_bank"] == "ICBC"
    route = shown["orders"][0]["route"]
    assert route["rule"] == "qr" and route["bank"] == "ICBC" and route["channel"] == "alipay"
    assert route["weights"] == {"alipay": "100%"} and "alipay's 100% share" in route["reason"]
    assert route["config_version"] == 2 and route["fallbacks"] == ["wechatpay"]
    assert show(running, cheapest.json()["payment_id"])["orders"][0]["route"]["weights"] == {}

    history = json.loads(cli(running, "routing", "history", "--json"))
    assert [(v["version"], v["by"], v["action"]) for v in history] == [
        (2, "ops-bob", "set-weight"),
        (1, "ops-alice", "rules-apply"),
    ]
    assert history[0]["changes"] == ["weight ICBC alipay: 0% -> 100%"]

    cli(running, "routing", "rollback", "--by", "ops-bob", "--reason", "undo")
    time.sleep(RELOAD_INTERVAL_S + 0.5)
    after = client.create_payment(routed(merchant, "ICBC"))
    assert after.json()["channel"] == "wechatpay", after.text
    assert show(running, after.json()["payment_id"])["orders"][0]["route"]["config_version"] == 3

    unrouted = client.create_payment(routed(merchant, method="page"))
    assert unrouted.status_code == 400 and unrouted.json()["code"] == "NO_ROUTE", unrouted.text


def create_with_retries(client: Any, body: dict[str, Any], tries: int = 8) -> dict[str, Any]:
    """A merchant retrying 503s with the same body, as the API contract asks."""
    for _ in range(tries):
        answer = client.create_payment(body)
        if answer.status_code != 503:
            assert answer.status_code in (200, 201), answer.text
            created: dict[str, Any] = answer.json()
            return created
        time.sleep(0.2)
    raise AssertionError(f"still 503 after {tries} tries: {answer.text}")


def live_orders(shown: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in shown["orders"] if o["status"] in ("REQUESTED", "OPEN")]


def test_failover_to_the_next_channel_never_leaves_two_live_orders(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, tmp_path: Path
) -> None:
    running = platform_factory()
    apply_rules(running, tmp_path)
    faults = {"error_rate": 0.5, "seed": 11}
    assert running.channel_sandbox("wechatpay", "POST", "/sandbox/faults", faults).is_success
    client = running.client()
    failed_over = 0
    for _ in range(12):
        created = create_with_retries(client, routed(merchant))
        shown = show(running, created["payment_id"])
        assert len(live_orders(shown)) == 1, shown["orders"]
        assert live_orders(shown)[0]["channel"] == created["channel"]
        if created["channel"] == "alipay":
            first, second = shown["orders"]
            assert (first["channel"], first["status"]) == ("wechatpay", "CLOSED")
            assert second["route"]["out"] == {
                "wechatpay": "order not accepted: CHANNEL_UNAVAILABLE"
            }
            failed_over += 1
    assert failed_over >= 1, "error_rate 0.5 over 12 payments never failed over"


def test_the_breaker_takes_a_failing_channel_out_and_probes_it_back(
    platform_factory: PlatformFactory, merchant: MerchantReceiver, tmp_path: Path
) -> None:
    running = platform_factory()
    apply_rules(running, tmp_path, min_calls=4)
    client = running.client()
    down = {"error_rate": 1.0}
    assert running.channel_sandbox("wechatpay", "POST", "/sandbox/faults", down).is_success
    stuck = []  # their wechatpay order could not be withdrawn: no failover, 503
    for _ in range(4):
        answer = client.create_payment(body := routed(merchant))
        assert answer.status_code == 503, answer.text
        stuck.append(body)
    moved = create_with_retries(client, routed(merchant))
    assert moved["channel"] == "alipay"
    route = show(running, moved["payment_id"])["orders"][0]["route"]
    assert "breaker open for wechatpay" in route["out"]["wechatpay"]
    assert "4 of 4 calls failed" in route["out"]["wechatpay"]

    metrics = running_metrics(running)
    assert 'paygrid_channel_breaker_state{bank="*",channel="wechatpay"} 2.0' in metrics
    assert 'paygrid_channel_calls_total{bank="*",channel="wechatpay",outcome="error"}' in metrics

    assert running.channel_sandbox(
        "wechatpay", "POST", "/sandbox/faults", {"error_rate": 0}
    ).is_success
    time.sleep(2.5)  # the cool-down: probes go through again
    channels = []
    for _ in range(5):  # one probe per probe_interval_s (0.2 s) while half open
        channels.append(create_with_retries(client, routed(merchant))["channel"])
        time.sleep(0.3)
    assert "wechatpay" in channels, channels
    assert channels[-1] == "wechatpay", channels  # closed again after two probe successes
    closed = 'paygrid_channel_breaker_state{bank="*",channel="wechatpay"} 0.0'
    assert closed in running_metrics(running)
    for body in stuck:  # the merchant's retries now go through on the channel they began on
        assert create_with_retries(client, body)["channel"] == "wechatpay"


def running_metrics(running: RunningPlatform) -> str:
    return "\n".join(httpx.get(url + "/metrics", timeout=10).text for url in running.ops_urls())
