"""NetsUnion gateway payments (网关支付, method ``page``, MODELLED) against the sandbox as a real
process over real HTTP: the order registered through the adapter, paid (or failed) by
``/sandbox/pay`` or through the bank's own page with the adapter's FORM posted, the signed
notification, query, close before payment, expiry, a per-bank fault, and the clearing file."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
import pytest

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.adapter import NetsUnionAdapter
from paygrid.channels.ports import (
    Callback,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    PayerAction,
    PayerActionKind,
    RefundRequest,
    RefundState,
    TradeState,
)
from paygrid.kernel.money import Money
from tests.integration.netsunion_helpers import (
    Receiver,
    adapter_for,
    new_ref,
    receiver,
    start_sandbox,
)
from tests.integration.wechatpay_helpers import SandboxProcess
from tests.support import wait_until

pytestmark = pytest.mark.timeout(120)
RETURN_URL = "https://shop.example/return?order=1"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("netsunion-gateway"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        assert client.delete("/sandbox/faults").status_code == 200
        assert client.post("/sandbox/settings", json={"retry_scale": 0.01}).status_code == 200
        yield client


@pytest.fixture(scope="module")
def adapter(sandbox: SandboxProcess) -> NetsUnionAdapter:
    return adapter_for(sandbox)


@pytest.fixture
def member(adapter: NetsUnionAdapter) -> Iterator[Receiver]:
    with receiver(lambda body: adapter.callback_ack()) as got:
        yield got


def order(
    url: str, fen: int = 10000, bank: str = "ICBC", expire_at: datetime | None = None
) -> OrderRequest:
    expire_at = expire_at or datetime.now(UTC) + timedelta(minutes=30)
    return OrderRequest(
        new_ref(), Money(fen, "CNY"), "网关支付测试", url, "page",
        expire_at=expire_at, return_url=RETURN_URL, payer_bank=bank,
    )  # fmt: skip


def callbacks_of(adapter: NetsUnionAdapter, got: Receiver, ref: str) -> list[Callback]:
    parsed = [adapter.parse_callback(h, b) for h, b in list(got.received)]
    return [c for c in parsed if isinstance(c, Callback) and c.trade.payment_ref == ref]


def pay(http: httpx.Client, ref: str, outcome: str = "SUCCESS") -> httpx.Response:
    return http.post("/sandbox/pay", json={"out_trade_no": ref, "outcome": outcome})


def open_page(action: PayerAction) -> httpx.Response:
    """What the payer's browser does with the FORM: POST the fields to the bank's page."""
    assert action.url is not None
    return httpx.post(action.url, data=dict(action.fields), trust_env=False)


def test_a_gateway_payment_is_paid_notified_and_queried(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    request = order(member.url, 12345)
    action = adapter.create_order(request)
    assert action.kind is PayerActionKind.FORM and action.url is not None
    assert action.url.endswith("/bank/C1010211000012/gateway")  # the payer's bank's page
    assert action.fields["TrxId"] == request.payment_ref
    assert action.fields["TrxAmt"] == "CNY123.45" and action.fields["Sgntr"]
    again = dict(adapter.create_order(request).fields)  # idempotent: the same order and token
    assert {**again, "Sgntr": ""} == {**action.fields, "Sgntr": ""}  # (SM2 signs randomised)
    assert adapter.query(request.payment_ref).state is TradeState.PENDING
    paid = pay(http, request.payment_ref)
    assert paid.status_code == 200 and paid.json()["order"]["trade_state"] == "SUCCESS"
    assert paid.json()["return_url"].startswith(RETURN_URL + "&TrxId=")
    wait_until(lambda: bool(callbacks_of(adapter, member, request.payment_ref)), timeout=15)
    [told] = callbacks_of(adapter, member, request.payment_ref)
    assert told.trade.state is TradeState.SUCCESS and told.trade.amount == Money(12345, "CNY")
    queried = adapter.query(request.payment_ref)
    assert queried.state is TradeState.SUCCESS and queried.paid_at is not None
    assert adapter.close(request.payment_ref) is CloseOutcome.ALREADY_PAID
    orders = {o["out_trade_no"]: o for o in http.get("/sandbox/orders").json()["orders"]}
    listed = orders[request.payment_ref]
    assert listed["method"] == "page" and listed["trade_state"] == "SUCCESS"
    assert listed["total"] == 12345 and listed["return_url"] == RETURN_URL
    refund = RefundRequest(
        new_ref("RF"), request.payment_ref, Money(45, "CNY"), Money(12345, "CNY"), member.url
    )
    assert adapter.refund(refund).state is RefundState.PROCESSING
    wait_until(
        lambda: (
            adapter.query_refund(refund.refund_ref, request.payment_ref).state
            is RefundState.SUCCESS
        ),
        timeout=15,
    )


def test_a_failed_payment_is_final(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    request = order(member.url)
    adapter.create_order(request)
    assert pay(http, request.payment_ref, "FAIL").json()["order"]["trade_state"] == "FAILED"
    wait_until(lambda: bool(callbacks_of(adapter, member, request.payment_ref)), timeout=15)
    assert callbacks_of(adapter, member, request.payment_ref)[0].trade.state is TradeState.FAILED
    assert adapter.query(request.payment_ref).state is TradeState.FAILED
    assert adapter.close(request.payment_ref) is CloseOutcome.CLOSED
    again = pay(http, request.payment_ref)
    assert again.status_code == 409 and again.json()["code"] == "ORDER_FAILED"


def test_a_closed_order_is_refused_by_its_page(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    request = order(member.url)
    action = adapter.create_order(request)
    assert adapter.close(request.payment_ref) is CloseOutcome.CLOSED
    assert adapter.query(request.payment_ref).state is TradeState.CLOSED
    assert adapter.close(request.payment_ref) is CloseOutcome.CLOSED  # again: the same
    page = open_page(action)
    assert page.status_code == 410 and "ORDER_CLOSED" in page.text
    refused = pay(http, request.payment_ref)
    assert refused.status_code == 410 and refused.json()["code"] == "ORDER_CLOSED"
    with pytest.raises(ChannelError) as closed:
        adapter.create_order(request)
    assert closed.value.code == "ORDER_CLOSED"
    assert not callbacks_of(adapter, member, request.payment_ref)  # a close is not notified


def test_an_unpaid_order_expires(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    request = order(member.url, expire_at=datetime.now(UTC) + timedelta(seconds=2.5))
    action = adapter.create_order(request)
    assert open_page(action).status_code == 200
    wait_until(lambda: adapter.query(request.payment_ref).state is TradeState.CLOSED, timeout=10)
    assert open_page(action).status_code == 410
    reopened = httpx.get(action.url or "", params={"Tkn": action.fields["Tkn"]}, trust_env=False)
    assert reopened.status_code == 410 and "已超时" in reopened.text
    assert pay(http, request.payment_ref).status_code == 410
    assert adapter.close(request.payment_ref) is CloseOutcome.CLOSED
    with pytest.raises(ChannelError) as late:  # the adapter refuses an expired payment itself
        adapter.create_order(order(member.url, expire_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert late.value.code == "INVALID_PARAMETER"


def test_faults_for_one_bank_hit_its_gateway_orders(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    http.post("/sandbox/faults", json={"bank": "ICBC", "error_rate": 1.0})
    with pytest.raises(ChannelError) as busy:
        adapter.create_order(order(member.url, bank="ICBC"))
    assert busy.value.code == wire.SYS_BUSY and busy.value.retryable
    cmb = order(member.url, bank="CMB")
    assert adapter.create_order(cmb).kind is PayerActionKind.FORM  # another bank: untouched
    http.post("/sandbox/faults", json={"error_rate": 0.0, "decline_rate": 1.0})
    icbc = order(member.url, bank="ICBC")
    adapter.create_order(icbc)
    assert pay(http, icbc.payment_ref).json()["order"]["trade_state"] == "FAILED"  # declined
    assert pay(http, cmb.payment_ref).json()["order"]["trade_state"] == "SUCCESS"


def test_gateway_payments_are_in_the_clearing_file(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    request = order(member.url, 4321)
    adapter.create_order(request)
    pay(http, request.payment_ref)
    paid_at = adapter.query(request.payment_ref).paid_at
    assert paid_at is not None
    closed = http.post("/sandbox/close-day", json={"date": paid_at.date().isoformat()}).json()
    assert closed["bill_ready"] and closed["settlement"]
    content = adapter.download_bill(paid_at.date())
    [line] = [x for x in adapter.parse_bill(content) if x.payment_ref == request.payment_ref]
    assert line.kind == "PAYMENT" and line.amount == Money(4321, "CNY") and line.fee.minor >= 0
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        text = "".join(archive.read(n).decode() for n in archive.namelist())
    [row] = [r for r in text.splitlines() if r.startswith(request.payment_ref + ",")]
    assert row.split(",")[3] == wire.GATEWAY  # MsgTp: a gateway payment, TrxCtgy 0101


def test_the_payer_pays_through_the_banks_page(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    request = order(member.url, 888)
    action = adapter.create_order(request)
    forged = open_page(
        PayerAction(
            PayerActionKind.FORM, url=action.url, fields={**action.fields, "TrxAmt": "CNY0.01"}
        )
    )
    assert forged.status_code == 400 and "SIGNATURE_INVALID" in forged.text
    unknown = httpx.get(action.url or "", params={"Tkn": "nope"}, trust_env=False)
    assert unknown.status_code == 404 and "支付令牌无效" in unknown.text
    page = open_page(action)
    assert page.status_code == 200
    assert "中国工商银行" in page.text and "¥8.88" in page.text
    assert adapter.account.merchant_id in page.text and 'id="pay"' in page.text
    target = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text)[1])  # type: ignore[index]
    token = unescape(re.search(r'name="Tkn" value="([^"]+)"', page.text)[1])  # type: ignore[index]
    origin = action.url.split("/bank/")[0]  # type: ignore[union-attr]
    back = httpx.post(origin + target, data={"Tkn": token, "outcome": "SUCCESS"}, trust_env=False)
    assert back.status_code == 303
    assert back.headers["location"].startswith(RETURN_URL + "&TrxId=" + request.payment_ref)
    wait_until(lambda: bool(callbacks_of(adapter, member, request.payment_ref)), timeout=15)
    assert callbacks_of(adapter, member, request.payment_ref)[0].trade.state is (TradeState.SUCCESS)
    assert adapter.query(request.payment_ref).state is TradeState.SUCCESS
    shown = open_page(action)  # after paying: the page says so, and pays nothing twice
    assert shown.status_code == 200 and 'id="pay"' not in shown.text and "已支付" in shown.text
    time.sleep(0.2)
    assert len(callbacks_of(adapter, member, request.payment_ref)) == 1
