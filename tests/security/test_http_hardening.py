"""Defect 9 (issue 7), the HTTP points: currencies no channel takes, the cashier's security
headers and its ``error=`` text, the replayed close's header, and /metrics kept off the
public ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paygrid.storage.schema import payments
from tests.support import RunningPlatform, start_platform

pytestmark = pytest.mark.timeout(180)
NOTIFY_URL = "http://127.0.0.1:9/notify"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    platform = start_platform(tmp_path_factory.mktemp("hardening"))
    yield platform
    platform.stop()


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "out_trade_no": "o-" + uuid.uuid4().hex[:12],
        "amount": {"total": 900, "currency": "CNY"},
        "description": "book",
        "notify_url": NOTIFY_URL,
    }
    body.update(changes)
    return body


def payment_count(running: RunningPlatform) -> int:
    db = running.database()
    try:
        with db.read() as conn:
            count: int = conn.execute(select(func.count()).select_from(payments)).scalar_one()
            return count
    finally:
        db.dispose()


def created(running: RunningPlatform, **changes: Any) -> dict[str, Any]:
    answer = running.client().create_payment(order(**changes))
    assert answer.status_code == 201, answer.text
    payment: dict[str, Any] = answer.json()
    return payment


# --- currencies: only what the merchant's channels take (WeChat Pay: CNY) ----------------------
@pytest.mark.parametrize("currency", ["XXX", "XTS", "XAU", "USD", "HKD"])
@pytest.mark.parametrize("channel", [None, "wechatpay"], ids=["cashier", "wechatpay"])
def test_a_currency_no_channel_takes_is_refused(
    running: RunningPlatform, currency: str, channel: str | None
) -> None:
    before = payment_count(running)
    extra: dict[str, Any] = {"channel": channel, "method": "native"} if channel else {}
    answer = running.client().create_payment(
        order(amount={"total": 900, "currency": currency}, **extra)
    )
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["code"] == "UNSUPPORTED_CURRENCY" and body["field"] == "amount.currency", body
    assert body["request_id"].startswith("req_")
    assert payment_count(running) == before


def test_unknown_currency_codes_stay_invalid_and_cny_works(running: RunningPlatform) -> None:
    for code in ("ZZZ", "cny", "RMB"):
        answer = running.client().create_payment(order(amount={"total": 900, "currency": code}))
        assert answer.status_code == 400 and answer.json()["code"] == "INVALID_CURRENCY", code
    assert created(running)["amount"] == {"total": 900, "currency": "CNY"}
    native = created(running, channel="wechatpay", method="native")
    assert native["status"] == "PAYING" and native["code_url"]


# --- the cashier: strict headers on every response, no text from the URL ------------------------
EXPECTED_HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def assert_strict_headers(response: httpx.Response) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name, response.headers)
    csp = response.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"], csp
    assert directives["frame-ancestors"] == ["'none'"], csp
    assert directives["script-src"] == ["'self'"], csp  # no inline script, no eval
    assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'self'"], csp
    assert "unsafe" not in csp, csp


def test_cashier_responses_carry_strict_security_headers(running: RunningPlatform) -> None:
    payment = created(running, channel="wechatpay", method="native")
    page_url = payment["cashier_url"]
    token = page_url.split("t=", 1)[1]
    base = f"{running.cashier_url}/pay/{payment['payment_id']}"
    responses = [
        httpx.get(page_url),
        httpx.get(f"{base}/qr.png?t={token}"),
        httpx.get(f"{base}/status?t={token}"),
        httpx.get(f"{running.cashier_url}/static/cashier.js"),
        httpx.get(f"{running.cashier_url}/static/cashier.css"),
        httpx.get(f"{base}?t=wrong"),  # the 404 page
        httpx.post(f"{base}/method", content=b"t=" + b"x" * 70_000),  # the 413
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 413]
    for response in responses:
        assert_strict_headers(response)
    page = responses[0].text
    assert "<script>" not in page and " style=" not in page and "onclick" not in page
    assert '<script src="/static/cashier.js">' in page


def test_cashier_shows_only_known_error_messages(running: RunningPlatform) -> None:
    payment = created(running)
    url = payment["cashier_url"]
    phishing = "Your card was blocked. Call +86 400 000 0000 <b>now</b>"
    for error in (phishing, "PAYMENT_CLOSED_", "__class__", "<script>alert(1)</script>"):
        page = httpx.get(url, params={"t": url.split("t=", 1)[1], "error": error})
        assert page.status_code == 200
        assert 'id="error"' not in page.text, error
        assert "Call +86" not in page.text and "alert(1)" not in page.text
    known = httpx.get(f"{url}&error=CHANNEL_UNAVAILABLE")
    assert 'id="error"' in known.text
    assert "The channel is unavailable; try again" in known.text
    # The cashier's own redirect after a refused choice uses a code, not text.
    refused = httpx.post(
        f"{running.cashier_url}/pay/{payment['payment_id']}/method",
        data={"t": url.split("t=", 1)[1], "method": "bitcoin"},
    )
    assert refused.status_code == 303
    assert refused.headers["location"].endswith("&error=UNKNOWN_METHOD")
    shown = httpx.get(running.cashier_url + refused.headers["location"])
    assert "Choose one of the offered methods" in shown.text


# --- a replayed close says it is one --------------------------------------------------------
def test_replayed_close_carries_idempotent_replayed(running: RunningPlatform) -> None:
    client = running.client()
    payment_id = created(running)["payment_id"]
    path = f"/v1/payments/{payment_id}/close"
    first = client.request("POST", path, {}, headers={"Idempotency-Key": "close-1"})
    assert first.status_code == 200 and first.json()["status"] == "CLOSED", first.text
    assert "idempotent-replayed" not in first.headers
    again = client.request("POST", path, {}, headers={"Idempotency-Key": "close-1"})
    assert again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    # Like the create's replay.
    body = order()
    client.create_payment(body, idempotency_key="create-1")
    replay = client.create_payment(body, idempotency_key="create-1")
    assert replay.headers.get("idempotent-replayed") == "true"


# --- /metrics: on the operations port only ---------------------------------------------------
def test_metrics_are_not_served_on_public_ports(running: RunningPlatform) -> None:
    running.client().get_payment("pay_nothing")  # at least one API request to count
    for public in (running.api_url, running.cashier_url):
        answer = httpx.get(public + "/metrics")
        assert answer.status_code == 404, public
        assert "paygrid_http_requests_total" not in answer.text
        assert httpx.get(public + "/healthz").status_code == 200  # health stays public
    metrics = httpx.get(running.ops_url + "/metrics")
    assert metrics.status_code == 200
    assert 'paygrid_http_requests_total{app="api"' in metrics.text
    ready = httpx.get(running.ops_url + "/readyz")
    checks = {"database": True, "workers": True}  # workers: the background process is up
    assert ready.status_code == 200 and ready.json()["checks"] == checks
