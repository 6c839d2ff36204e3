"""The Alipay sandbox's notify retries and injected faults, against a real sandbox process."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from paygrid.channels.alipay.client import AlipayClient, AlipayConfig
from paygrid.channels.ports import ChannelError
from tests.integration.alipay_helpers import notify_receiver, sdk_client, start_sandbox
from tests.integration.wechatpay_helpers import SandboxProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.serial]  # delay/reorder timing: alone


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("alipay-faults"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        assert client.delete("/sandbox/faults").status_code == 200
        assert client.post("/sandbox/settings", json={"retry_scale": 0.002}).status_code == 200
        yield client
        client.delete("/sandbox/faults")


@pytest.fixture
def creds(http: httpx.Client) -> dict[str, str]:
    data: dict[str, str] = http.get("/sandbox/credentials").json()
    return data


def paid_trade(http: httpx.Client, creds: dict[str, str], notify_url: str) -> str:
    ref = f"FT{secrets.token_hex(8).upper()}"
    made = sdk_client(creds, notify_url).api_alipay_trade_precreate(
        subject="故障", out_trade_no=ref, total_amount="1.00"
    )
    assert made["code"] == "10000", made
    paid = http.post("/sandbox/pay", json={"app_id": creds["app_id"], "out_trade_no": ref})
    assert paid.status_code == 200, paid.text
    return ref


def deliveries(http: httpx.Client, ref: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = http.get(
        "/sandbox/notifications", params={"out_trade_no": ref}
    ).json()["notifications"]
    return rows


# --- retries ----------------------------------------------------------------------------------


def test_anything_but_exactly_success_is_retried(http: httpx.Client, creds: dict[str, str]) -> None:
    with notify_receiver(["fail", "SUCCESS", "success\n"]) as receiver:
        ref = paid_trade(http, creds, receiver.url)
        received = receiver.wait_of(ref, 4, timeout=20)  # 0.48 s, 1.2 s, 1.2 s apart
        assert len({n["notify_id"] for n in received}) == 1
        assert len({n["sign"] for n in received}) == 1  # the same form every time
        time.sleep(0.5)
        assert len(receiver.of(ref)) == 4  # `success` ended it
        [row] = deliveries(http, ref)
        assert (row["state"], row["attempts"], row["last_answer"]) == ("DELIVERED", 4, "success")


def test_the_schedule_ends_after_eight_notifies(http: httpx.Client, creds: dict[str, str]) -> None:
    assert http.post("/sandbox/settings", json={"retry_scale": 0.00002}).status_code == 200
    with notify_receiver(["fail"] * 20) as receiver:
        ref = paid_trade(http, creds, receiver.url)
        receiver.wait_of(ref, 8, timeout=20)
        deadline = time.monotonic() + 10
        while deliveries(http, ref)[0]["state"] != "FAILED" and time.monotonic() < deadline:
            time.sleep(0.05)
        [row] = deliveries(http, ref)
        assert (row["state"], row["attempts"], row["last_answer"]) == ("FAILED", 8, "fail")
        assert len(receiver.of(ref)) == 8


# --- notify faults ----------------------------------------------------------------------------


def test_duplicate_and_drop(http: httpx.Client, creds: dict[str, str]) -> None:
    with notify_receiver() as receiver:
        http.post("/sandbox/faults", json={"duplicate_rate": 1.0})
        twice = paid_trade(http, creds, receiver.url)
        first, second = receiver.wait_of(twice, 2)
        assert first == second
        http.post("/sandbox/faults", json={"duplicate_rate": 0.0, "drop_rate": 1.0})
        dropped = paid_trade(http, creds, receiver.url)
        assert [r["state"] for r in deliveries(http, dropped)] == ["DROPPED"]
        time.sleep(0.5)
        assert receiver.of(dropped) == []


def test_delay_and_reorder(http: httpx.Client, creds: dict[str, str]) -> None:
    with notify_receiver() as receiver:
        http.post("/sandbox/faults", json={"delay_ms": 1500})
        started = time.monotonic()
        late = paid_trade(http, creds, receiver.url)
        receiver.wait_of(late, 1)
        assert time.monotonic() - started >= 1.4
        http.post("/sandbox/faults", json={"delay_ms": 0, "reorder": True})
        refs = [paid_trade(http, creds, receiver.url) for _ in range(3)]
        for ref in refs:
            receiver.wait_of(ref, 1)
        order = [
            n.form["out_trade_no"] for n in receiver.received if n.form["out_trade_no"] in refs
        ]
        assert order == list(reversed(refs))


# --- API faults -------------------------------------------------------------------------------


def test_api_errors_are_signed_20000_and_change_nothing(
    http: httpx.Client, creds: dict[str, str]
) -> None:
    with notify_receiver() as receiver:
        ref = paid_trade(http, creds, receiver.url)
        ali = sdk_client(creds)
        http.post("/sandbox/faults", json={"error_rate": 1.0})
        refused = ali.api_alipay_trade_refund(
            refund_amount="0.50", out_trade_no=ref, out_request_no="E1"
        )
        assert (refused["code"], refused["sub_code"]) == ("20000", "isp.unknow-error")
        http.delete("/sandbox/faults")
        queried = ali.api_alipay_trade_fastpay_refund_query("E1", out_trade_no=ref)
        assert "refund_status" not in queried  # the refund was not made


def test_a_timeout_leaves_the_call_done_and_latency_slows_every_answer(
    http: httpx.Client, creds: dict[str, str]
) -> None:
    with notify_receiver() as receiver:
        ref = paid_trade(http, creds, receiver.url)
    config = dataclasses.replace(AlipayConfig.from_credentials(creds), read_timeout=0.5)
    impatient = AlipayClient(config)
    http.post("/sandbox/faults", json={"timeout_rate": 1.0, "timeout_ms": 1500})
    with pytest.raises(ChannelError) as caught:
        impatient.call(
            "alipay.trade.refund",
            {"out_trade_no": ref, "refund_amount": "0.50", "out_request_no": "T1"},
        )
    assert (caught.value.code, caught.value.retryable) == ("TIMEOUT", True)
    http.post("/sandbox/faults", json={"timeout_rate": 0.0, "latency_ms": 300})
    started = time.monotonic()
    done = impatient.call(
        "alipay.trade.fastpay.refund.query", {"out_trade_no": ref, "out_request_no": "T1"}
    )
    assert time.monotonic() - started >= 0.3
    assert done["refund_status"] == "REFUND_SUCCESS"  # the timed-out refund was made
    impatient.close()


def test_knobs_are_validated(http: httpx.Client) -> None:
    assert http.post("/sandbox/faults", json={"drop_rate": 2}).status_code == 400
    assert http.post("/sandbox/faults", json={"nope": 1}).status_code == 400
    assert http.post("/sandbox/settings", json={"fee_rate_ppm": 1.5}).status_code == 400
    assert http.post("/sandbox/close-day", json={"date": "yesterday"}).status_code == 400
    assert http.get("/sandbox/settings").json()["fee_rate_ppm"] == 6000
