"""Defect 6: SSRF through notify_url. Internal, obfuscated and credential-bearing URLs are
refused at payment create (400 INVALID_NOTIFY_URL, nothing stored) by a real server; at
delivery every resolved address is vetted again and the connection pinned to a vetted one
(DNS rebinding); the merchant sees only coarse failure reasons. No test here sends a packet
to anything but the loopback: resolvers are injected and non-loopback "connections" go to a
recording transport."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygrid.api.client import MerchantClient
from paygrid.notify.delivery import Poster
from paygrid.notify.url_policy import IpAddress, parse_networks
from tests.conftest import PlatformFactory
from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(300)
EMBEDDED = parse_networks("127.0.0.0/8")
PROD = parse_networks("")
HEADERS = {"Content-Type": "application/json", "Paygrid-Notify-Id": "ntf_test"}

# What the attack used, and its relatives: each must be a 400 at create.
REFUSED_AT_CREATE = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://user:pw@merchant.example.com/notify",
    "http://10.0.0.1/notify",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[::1]/",
    "http://0.0.0.0:8000/",
    "http://224.0.0.1/",
    "ftp://merchant.example.com/notify",
]


# --- delivery: vetted resolution, pinned connection ----------------------------------------
class Recorder:
    """A transport that records what would have been sent and answers 200; nothing leaves
    the process. Its ``requests`` being empty proves no connection was attempted."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


class FakeDns:
    """An injected resolver whose answers change from one query to the next (rebinding)."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.queries: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IpAddress]:
        self.queries.append((host, port))
        answer = self._answers[min(len(self.queries), len(self._answers)) - 1]
        return [ip_address(a) for a in answer]


def _post(poster: Poster, url: str) -> Any:
    async def run() -> Any:
        try:
            return await poster.post(url, dict(HEADERS), b'{"id":"ntf_test"}')
        finally:
            await poster.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(
    "answer",
    [
        ["10.0.0.1"],
        ["169.254.169.254"],
        ["fd00:ec2::254"],
        ["::ffff:127.0.0.1"],
        ["127.0.0.1"],
        ["100.64.0.1"],
        ["93.184.215.14", "10.0.0.1"],  # one bad address among good ones refuses the lot
        ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "fe80::1"],
    ],
)
def test_a_name_resolving_to_an_internal_address_is_not_contacted(answer: list[str]) -> None:
    dns, recorder = FakeDns(answer), Recorder()
    poster = Poster(PROD, resolver=dns, transport=recorder.transport)
    outcome = _post(poster, "https://merchant.example.com/notify")
    assert dns.queries == [("merchant.example.com", 443)]
    assert recorder.requests == []  # no connection attempted
    assert outcome.status is None and outcome.reason == "address_not_allowed"
    assert not outcome.ok


def test_the_vetted_address_is_pinned_against_rebinding() -> None:
    # First answer public, every later one the metadata service: only one query is made, and
    # the request goes to the address that was checked, Host and SNI naming the merchant.
    dns, recorder = FakeDns(["93.184.215.14"], ["169.254.169.254"]), Recorder()
    poster = Poster(PROD, resolver=dns, transport=recorder.transport)
    outcome = _post(poster, "https://merchant.example.com:8443/paygrid/notify?shop=7")
    assert outcome.ok and outcome.status == 200
    assert len(dns.queries) == 1
    [sent] = recorder.requests
    assert str(sent.url) == "https://93.184.215.14:8443/paygrid/notify?shop=7"
    assert sent.headers["host"] == "merchant.example.com:8443"
    assert sent.extensions["sni_hostname"] == "merchant.example.com"
    assert sent.headers["paygrid-notify-id"] == "ntf_test"


def test_a_stored_url_that_the_policy_now_refuses_is_not_contacted() -> None:
    # A notification queued before the rule (or before the allow list shrank).
    for url in ("http://169.254.169.254/", "http://0x7f000001/", "http://127.0.0.1:9/n"):
        dns, recorder = FakeDns(["93.184.215.14"]), Recorder()
        outcome = _post(Poster(PROD, resolver=dns, transport=recorder.transport), url)
        assert recorder.requests == [] and dns.queries == []
        assert outcome.reason in ("address_not_allowed", "invalid_url")


def test_pinned_delivery_over_real_http_keeps_the_host_name(merchant: MerchantReceiver) -> None:
    port = int(merchant.url.rsplit(":", 1)[1].split("/")[0])
    dns = FakeDns(["127.0.0.1"])
    outcome = _post(Poster(EMBEDDED, resolver=dns), f"http://merchant.test:{port}/notify")
    assert outcome.ok, outcome
    [(headers, body)] = merchant.received
    assert headers["Host"] == f"merchant.test:{port}"
    assert body == b'{"id":"ntf_test"}'


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])  # bound, not listening: connections are refused


def test_failure_reasons_are_coarse(closed_port: int) -> None:
    refused = _post(Poster(EMBEDDED), f"http://127.0.0.1:{closed_port}/")
    assert refused.reason == "connection_failed" and refused.status is None
    assert refused.detail is not None  # the detail is for paygrid's log only

    for status, reason in (
        (500, "http_status_5xx"),
        (404, "http_status_4xx"),
        (302, "http_status_3xx"),
    ):
        transport = httpx.MockTransport(lambda _r, s=status: httpx.Response(s, text="secret"))
        outcome = _post(Poster(PROD, transport=transport), "http://8.8.8.8/notify")
        assert (outcome.status, outcome.reason) == (status, reason)


# --- the API: refused at create, and again at delivery -------------------------------------
def _refused(client: MerchantClient, receiver: MerchantReceiver, url: str) -> None:
    body = {**order(receiver), "notify_url": url}
    response = client.create_payment(body, idempotency_key="k-" + body["out_trade_no"])
    assert response.status_code == 400, (url, response.text)
    error = response.json()
    assert error["code"] == "INVALID_NOTIFY_URL", (url, error)
    assert error["field"] == "notify_url" and error["request_id"].startswith("req_")
    assert "notify_url" in error["message"]
    lookup = client.request("GET", f"/v1/payments?out_trade_no={body['out_trade_no']}")
    assert lookup.status_code == 404  # nothing stored
    # The idempotency key was not spent on the refusal: the corrected request goes through.
    fixed = client.create_payment(
        {**body, "notify_url": "https://merchant.example.com/notify"},
        idempotency_key="k-" + body["out_trade_no"],
    )
    assert fixed.status_code == 201, fixed.text


def _view_has_no_detail(view: dict[str, Any], port: int) -> None:
    text = json.dumps(view).lower()
    for leak in ("refused", "errno", "connecterror", str(port)):
        if leak == str(port) and str(port) in view["url"]:
            text = text.replace(view["url"].lower(), "")
        assert leak not in text, (leak, view)


def _attempted(client: MerchantClient, payment_id: str) -> bool:
    data = client.notifications(payment_id).json()["data"]
    return bool(data) and data[0]["attempts"] >= 1


def _choose_wechatpay_at_cashier(running: RunningPlatform, payment: dict[str, Any]) -> str:
    token = payment["cashier_url"].split("?t=", 1)[1]
    chosen = httpx.post(
        f"{running.cashier_url}/pay/{payment['payment_id']}/method",
        data={"t": token, "method": "wechatpay"},
        timeout=30,
    )
    assert chosen.status_code in (200, 303), chosen.text
    code_url: str = running.client().get_payment(payment["payment_id"]).json()["code_url"]
    return code_url


def test_notify_url_policy_through_the_api(
    platform_factory: PlatformFactory,
    merchant: MerchantReceiver,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # the CLI's table, unabridged
    embedded = platform_factory()  # default: 127.0.0.0/8 allowed, merchants in development
    client = embedded.client()
    for url in REFUSED_AT_CREATE:
        _refused(client, merchant, url)
    assert client.create_payment(order(merchant)).status_code == 201  # 127.0.0.1 allowed here

    # A loopback port nobody listens on: the merchant sees "connection_failed", not the
    # "connection refused" that told a port scanner which ports are closed.
    dead = client.create_payment(
        {**order(merchant), "notify_url": f"http://127.0.0.1:{closed_port}/x"}
    )
    assert dead.status_code == 201, dead.text
    pay(embedded, dead.json()["code_url"])
    wait_status(client, dead.json()["payment_id"], "SUCCESS")
    wait_until(lambda: _attempted(client, dead.json()["payment_id"]))
    view = client.notifications(dead.json()["payment_id"]).json()["data"][0]
    assert view["deliveries"][0]["error"] == "connection_failed"
    assert view["deliveries"][0]["http_status"] is None
    _view_has_no_detail(view, closed_port)
    cli = embedded.paygrid(
        "notifications", "list", "--mchid", client.mchid, "--payment-id", dead.json()["payment_id"]
    )
    assert cli.returncode == 0 and "connection_failed" in cli.stdout, cli.stdout
    assert "refused" not in cli.stdout.lower()

    # Created while the loopback was allowed, delivered after it no longer is: the delivery
    # checks again and refuses; the merchant's endpoint hears nothing.
    waiting = client.create_payment(order(merchant, channel=None, method="cashier")).json()
    embedded.stop()

    strict = platform_factory(env={"PAYGRID_NOTIFY_ALLOW_NETWORKS": ""})  # same data dir
    client = strict.client()
    for url in (merchant.url, "http://localhost:22/", "http://app.localhost/notify"):
        _refused(client, merchant, url)
    before = len(merchant.received)
    pay(strict, _choose_wechatpay_at_cashier(strict, waiting))
    wait_status(client, waiting["payment_id"], "SUCCESS")

    wait_until(lambda: _attempted(client, waiting["payment_id"]), timeout=30)
    view = client.notifications(waiting["payment_id"]).json()["data"][0]
    assert view["deliveries"][0]["error"] == "address_not_allowed"
    assert view["deliveries"][0]["http_status"] is None
    assert len(merchant.received) == before


# --- TLS through a pinned address: the certificate is checked against the host name --------
def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_merchant(tmp_path: Path) -> Iterator[tuple[int, Path, list[tuple[str, str]]]]:
    """An HTTPS endpoint on the loopback whose certificate names merchant.test only; records
    the SNI name and Host header of each request."""
    cert, key = _self_signed(tmp_path, "merchant.test")
    seen: list[tuple[str, str]] = []
    sni: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((sni[-1] if sni else "", self.headers.get("Host", "")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "") and None
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1]), cert, seen
    finally:
        server.shutdown()
        server.server_close()


def test_tls_to_a_pinned_address_verifies_the_merchants_name(
    tls_merchant: tuple[int, Path, list[tuple[str, str]]],
) -> None:
    port, cert, seen = tls_merchant
    trusting = ssl.create_default_context(cafile=str(cert))

    def poster(answer: str) -> Poster:
        transport = httpx.AsyncHTTPTransport(verify=trusting)
        return Poster(EMBEDDED, resolver=FakeDns([answer]), transport=transport)

    ok = _post(poster("127.0.0.1"), f"https://merchant.test:{port}/notify")
    assert ok.ok, ok
    assert seen == [("merchant.test", f"merchant.test:{port}")]
    # Another name pinned to the same address: the certificate does not match, no delivery.
    other = _post(poster("127.0.0.1"), f"https://other.test:{port}/notify")
    assert other.reason == "connection_failed" and len(seen) == 1
