"""The served OpenAPI document describes the merchant API exactly.

schemathesis runs against a real `paygrid up`: it loads the live /openapi.json, generates
valid and invalid requests for every operation (examples, coverage, fuzzing, and stateful
sequences along the document's links), signs each with a real merchant's key
(schemathesis_signing.py: a fresh nonce and timestamp per request) and checks every answer:
no 5xx, every body and header as documented, no undocumented status code or content type.

Bounded: PAYGRID_SCHEMATHESIS_EXAMPLES examples per operation (default 30), a fixed seed
(PAYGRID_SCHEMATHESIS_SEED), PAYGRID_SCHEMATHESIS_BUDGET_S seconds at most (default 240).
docs/operations.md says how to run it longer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

# Imported here, at collection, not lazily inside a test: pytest rewrites schemathesis' modules
# (it is a pytest plugin), and CPython 3.11.7's ast.parse can fail with "AST constructor
# recursion depth mismatch" once a RecursionError happened earlier in the process.
from schemathesis.specs.openapi import schemas as _openapi_schemas  # noqa: F401
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_payment_flow import order, pay, wait_status
from tests.integration.wechatpay_helpers import beijing_date
from tests.security.schemathesis_signing import PaygridSigner
from tests.support import (
    MerchantReceiver,
    PostgresServer,
    RunningPlatform,
    start_platform,
    wait_until,
)

EXAMPLES = int(os.environ.get("PAYGRID_SCHEMATHESIS_EXAMPLES", "30"))
SEED = int(os.environ.get("PAYGRID_SCHEMATHESIS_SEED", "20260807"))
BUDGET_S = float(os.environ.get("PAYGRID_SCHEMATHESIS_BUDGET_S", "240"))
pytestmark = pytest.mark.timeout(BUDGET_S + 180)  # + starting paygrid and PostgreSQL
HOOKS = Path(__file__).with_name("schemathesis_signing.py")
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
)
CHECK_FUNCTIONS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]
MERCHANT_PATHS = {
    "/v1/payments",
    "/v1/payments/{payment_id}",
    "/v1/payments/{payment_id}/close",
    "/v1/refunds",
    "/v1/refunds/{refund_id}",
    "/v1/agreements",
    "/v1/agreements/{agreement_id}",
    "/v1/agreements/{agreement_id}/confirm",
    "/v1/bills/{bill_date}",
    "/v1/reports/sku/{report_date}",
    "/v1/notifications",
    "/v1/notifications/{notify_id}/resend",
}


@dataclass(frozen=True)
class Live:
    """A platform with one paid payment whose notification was delivered, so the answers
    that carry a paid payment, a notification or a bill row are checked on real data."""

    running: RunningPlatform
    paid: dict[str, Any]
    notify_id: str

    @property
    def api_url(self) -> str:
        return self.running.api_url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    database_url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        database_url = server.create_database("openapi_" + uuid.uuid4().hex[:8])
    running = start_platform(tmp_path_factory.mktemp("openapi") / "var", database_url)
    merchant = MerchantReceiver()
    try:
        client = running.client()
        payment = client.create_payment(order(merchant)).json()
        pay(running, payment["code_url"])
        paid = wait_status(client, payment["payment_id"], "SUCCESS")
        wait_until(lambda: len(merchant.received) == 1, timeout=30)
        notify_id = merchant.received[0][0]["Paygrid-Notify-Id"]
        yield Live(running, paid, notify_id)
    finally:
        running.stop()
        merchant.close()


def _document(live: Live) -> dict[str, Any]:
    response = httpx.get(f"{live.api_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_schemathesis_finds_no_server_error_and_nothing_undocumented(
    live: Live, tmp_path: Path
) -> None:
    report = tmp_path / "schemathesis.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{live.api_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "PAYGRID_SCHEMATHESIS_CREDENTIALS": str(live.running.data_dir / "demo-merchant.json"),
    }
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=BUDGET_S
    )
    output = run.stdout[-12000:] + run.stderr[-4000:]
    assert run.returncode == 0, output
    result = json.loads(report.read_text())
    assert result["complete"] and result["stop_reason"] == "completed", output
    # two operations on /v1/payments and on /v1/refunds
    assert result["operations"]["tested"] == len(MERCHANT_PATHS) + 2, output
    assert result["failures"] == [] and result["errors"] == [], output
    assert result["test_cases"]["generated"] >= 20 * len(MERCHANT_PATHS), output
    phases = result["phases"]
    assert all(phases[p]["status"] == "success" for p in ("coverage", "fuzzing", "stateful"))


# --- facts of the document, and the signing it declares --------------------------------
def test_the_document_declares_the_signing_scheme_bodies_and_errors(
    live: Live,
) -> None:
    document = _document(live)
    scheme = document["components"]["securitySchemes"]["PaygridSignature"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "PAYGRID-HMAC-SHA256" in scheme["description"]
    assert document["security"] == [{"PaygridSignature": []}]
    assert set(document["paths"]) == MERCHANT_PATHS, "only merchant routes: no callbacks, ops"
    assert "ValidationError" not in document["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for method, path, op in _operations(document):
        assert "422" not in op["responses"], f"{method} {path}"
        for status in ("400", "401", "413", "503"):
            body = op["responses"][status]["content"]["application/json"]["schema"]
            assert body == error_ref, f"{method} {path} {status}"
        if method == "POST":
            assert "application/json" in op["requestBody"]["content"], f"{method} {path}"
        for status, response in op["responses"].items():
            assert response["headers"]["Request-Id"]["required"], f"{method} {path} {status}"
        for parameter in op.get("parameters", []):
            schema = parameter["schema"]
            assert "pattern" in schema or "maxLength" in schema, f"{method} {path} {parameter}"
    bill = document["paths"]["/v1/bills/{bill_date}"]["get"]["responses"]["200"]
    assert list(bill["content"]) == ["text/csv"]
    assert bill["headers"]["Paygrid-Bill-Complete"]["required"]
    create = document["paths"]["/v1/payments"]["post"]
    assert create["requestBody"]["required"] is True
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreatePaymentIn"
    }
    assert {"201", "200", "409", "502"} <= set(create["responses"])
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]
    assert "GetPayment" in create["responses"]["201"]["links"]
    headers = [p["name"] for p in create["parameters"] if p["in"] == "header"]
    assert headers == ["Idempotency-Key"]
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message", "request_id"}
    assert schemas["Payment"]["additionalProperties"] is False
    assert {"amount", "description", "notify_url", "out_trade_no"} <= set(
        schemas["CreatePaymentIn"]["required"]
    )
    find = document["paths"]["/v1/payments"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in find["parameters"]] == [
        ("out_trade_no", "query", True)
    ]


def test_every_documented_operation_refuses_an_unsigned_request(
    live: Live,
) -> None:
    """The security the document declares holds on every operation (schemathesis signs
    everything, so it is checked here)."""
    filled = {
        "{payment_id}": "pay_" + "0" * 26,
        "{notify_id}": "ntf_" + "0" * 26,
        "{refund_id}": "rfd_" + "0" * 26,
        "{bill_date}": "2026-01-01",
        "{report_date}": "2026-01-01",
    }
    for method, path, _ in _operations(_document(live)):
        target = path
        for placeholder, value in filled.items():
            target = target.replace(placeholder, value)
        response = httpx.request(method, live.api_url + target, timeout=10)
        assert response.status_code == 401, f"{method} {path}: {response.text}"
        assert response.json()["code"] == "UNAUTHORIZED"
        assert response.headers["Request-Id"] == response.json()["request_id"]


def test_the_docs_page_is_served_and_no_path_redirects(live: Live) -> None:
    page = httpx.get(f"{live.api_url}/docs", timeout=10)
    assert page.status_code == 200 and "/openapi.json" in page.text
    # A redirect would make a signed client resend to another target (a 401 at best).
    paths = (
        "/v1/payments/",
        "/v1/refunds/",
        "/v1/notifications/",
        "/v1/bills/",
        "/v1/reports/sku/",
    )
    for path in paths:
        response = httpx.get(live.api_url + path, timeout=10)
        assert response.status_code == 404, f"{path}: {response.status_code}"
        assert response.json()["code"] == "NOT_FOUND"


def test_real_answers_match_the_document(live: Live) -> None:
    """Answers generated data rarely reaches (a paid payment, a notification and its resend,
    a bill with a row, an idempotent replay, a refused close, a refund, its repeat and an
    over-refund), checked as schemathesis does."""
    schema = schemathesis.openapi.from_url(f"{live.api_url}/openapi.json")
    signer = PaygridSigner(live.running.credentials)
    paid = live.paid
    new = {
        "out_trade_no": "o-" + uuid.uuid4().hex[:12],
        "amount": {"total": 300, "currency": "CNY"},
        "description": "tea",
        "notify_url": "http://127.0.0.1:9/notify",
        "channel": "wechatpay",
        "method": "native",
    }
    key = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    by_id = {"payment_id": paid["payment_id"]}
    refund = {
        "out_trade_no": paid["out_trade_no"],
        "out_refund_no": "rf-" + uuid.uuid4().hex[:12],
        "amount": 1,
        "reason": "one fen back",
        "notify_url": "http://127.0.0.1:9/refunds",
    }
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/v1/payments/{payment_id}", {"path_parameters": by_id}, 200),
        ("GET", "/v1/payments", {"query": {"out_trade_no": paid["out_trade_no"]}}, 200),
        ("GET", "/v1/notifications", {"query": by_id}, 200),
        (
            "POST",
            "/v1/notifications/{notify_id}/resend",
            {"path_parameters": {"notify_id": live.notify_id}, "body": {}},
            200,
        ),
        (
            "GET",
            "/v1/bills/{bill_date}",
            {"path_parameters": {"bill_date": beijing_date(paid["paid_at"]).isoformat()}},
            200,
        ),
        ("POST", "/v1/payments/{payment_id}/close", {"path_parameters": by_id, "body": {}}, 409),
        ("POST", "/v1/payments", {"body": new, "headers": key}, 201),
        ("POST", "/v1/payments", {"body": new, "headers": key}, 201),
        ("POST", "/v1/refunds", {"body": refund}, 201),
        ("POST", "/v1/refunds", {"body": refund}, 200),
        ("POST", "/v1/refunds", {"body": {**refund, "out_refund_no": "o", "amount": 10**9}}, 409),
        ("GET", "/v1/refunds", {"query": {"out_refund_no": refund["out_refund_no"]}}, 200),
        ("GET", "/v1/payments/{payment_id}", {"path_parameters": by_id}, 200),
    ]
    answers = []
    for method, path, data, status in calls:
        case = schema[path][method].Case(**data)
        response = case.call_and_validate(checks=CHECK_FUNCTIONS, auth=signer)
        assert response.status_code == status, f"{method} {path}: {response.text}"
        answers.append(response)
    assert answers[2].json()["data"][0]["id"] == live.notify_id
    assert answers[3].json()["deliveries"][-1]["manual"] is True
    assert paid["out_trade_no"] in answers[4].text
    assert answers[7].headers["idempotent-replayed"] == ["true"]
    assert answers[7].text == answers[6].text
    made = answers[8].json()
    assert answers[9].json() == made and answers[11].json() == made
    assert answers[10].json()["code"] == "REFUND_EXCEEDS_REMAINING"
    listed = answers[12].json()["refunds"]
    assert [r["refund_id"] for r in listed] == [made["refund_id"]]
    got = schema["/v1/refunds/{refund_id}"]["GET"].Case(
        path_parameters={"refund_id": made["refund_id"]}
    )
    assert got.call_and_validate(checks=CHECK_FUNCTIONS, auth=signer).json()["amount"] == 1


# --- what schemathesis found, kept found ----------------------------------------------------
def test_every_declared_method_works_and_an_undeclared_one_is_refused(live: Live) -> None:
    """With the payer it needs, each method the channel declares gives its payer action; a
    method the channel does not declare is 400 METHOD_NOT_SUPPORTED with nothing made."""
    client = live.running.client()
    wanted = {
        "native": ("qr_code", {}),
        "h5": ("redirect", {"client_ip": "203.0.113.7"}),
        "jsapi": ("app_params", {"openid": "o-payer-1"}),
        "app": ("app_params", {}),
    }
    for method, (kind, payer) in wanted.items():
        body = {
            "out_trade_no": "o-" + uuid.uuid4().hex[:12],
            "amount": {"total": 100, "currency": "CNY"},
            "description": "book",
            "notify_url": "http://127.0.0.1:9/notify",
            "channel": "wechatpay",
            "method": method,
            **({"payer": payer} if payer else {}),
        }
        made = client.create_payment(body)
        assert made.status_code == 201, made.text
        payment = made.json()
        assert (payment["status"], payment["method"]) == ("PAYING", method)
        assert payment["payer_action"]["kind"] == kind, payment
    ref = "o-" + uuid.uuid4().hex[:12]
    page = client.create_payment(
        {
            "out_trade_no": ref,
            "amount": {"total": 100, "currency": "CNY"},
            "description": "book",
            "notify_url": "http://127.0.0.1:9/notify",
            "channel": "wechatpay",
            "method": "page",
        }
    )
    assert page.status_code == 400 and page.json()["code"] == "METHOD_NOT_SUPPORTED", page.text
    assert client.request("GET", f"/v1/payments?out_trade_no={ref}").status_code == 404


def test_a_method_whose_channel_order_needs_the_payer_is_refused_before_anything_is_made(
    live: Live,
) -> None:
    """h5 and jsapi orders need the payer's IP or openid: without ``payer`` they were a 502
    CHANNEL_ERROR after the payment had been made; now a 400 before anything is made."""
    client = live.running.client()
    for method in ("h5", "jsapi"):
        ref = "o-" + uuid.uuid4().hex[:12]
        body = {
            "out_trade_no": ref,
            "amount": {"total": 100, "currency": "CNY"},
            "description": "book",
            "notify_url": "http://127.0.0.1:9/notify",
            "channel": "wechatpay",
            "method": method,
        }
        refused = client.create_payment(body)
        assert refused.status_code == 400, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == ("PAYER_REQUIRED", "payer")
        lookup = client.request("GET", f"/v1/payments?out_trade_no={ref}")
        assert lookup.status_code == 404, lookup.text
