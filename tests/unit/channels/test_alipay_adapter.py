"""AlipayAdapter against the Alipay sandbox app in process: every method of the port, the
quirks (precreate creates no trade; a closed unscanned QR stays payable; TRADE_CLOSED after a
full refund is a paid trade), notifies, refunds and the bill."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.adapter import AlipayAdapter, build_adapter
from paygrid.channels.alipay.bill import BEIJING
from paygrid.channels.alipay.client import AlipayConfig
from paygrid.channels.alipay.credentials import (
    SandboxCredentials,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.alipay.sandbox import create_app
from paygrid.channels.alipay.sandbox.service import AlipaySandbox
from paygrid.channels.ports import (
    BILL_NOT_READY,
    Callback,
    ChannelError,
    CloseOutcome,
    OrderRequest,
    PayerActionKind,
    RefundCallback,
    RefundRequest,
    RefundState,
    TradeState,
)
from paygrid.kernel.money import Money

BASE = "http://testserver"
NOTIFY_URL = "http://127.0.0.1:9/callbacks/alipay"  # nobody: the tests read the store


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alipay")


@pytest.fixture(scope="module")
def creds(data_dir: Path) -> SandboxCredentials:
    return load_or_create_sandbox_credentials(data_dir)


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(data_dir, BASE)) as test_client:
        yield test_client


@pytest.fixture
def adapter(client: TestClient, creds: SandboxCredentials) -> AlipayAdapter:
    config = AlipayConfig.from_credentials(creds.merchant_view(), BASE + "/gateway.do")
    return AlipayAdapter(config, client)


def sandbox_of(client: TestClient) -> AlipaySandbox:
    sandbox = client.app.state.sandbox  # type: ignore[attr-defined]
    assert isinstance(sandbox, AlipaySandbox)
    return sandbox


def ref() -> str:
    return "pay_" + uuid.uuid4().hex[:20].upper()


def order(
    payment_ref: str, fen: int = 1234, method: str = "native", **extra: object
) -> OrderRequest:
    return OrderRequest(
        payment_ref=payment_ref,
        amount=Money(fen, "CNY"),
        description="两斤苹果 apples",
        notify_url=NOTIFY_URL,
        method=method,
        **extra,  # type: ignore[arg-type]
    )


def paid(adapter: AlipayAdapter, client: TestClient, fen: int = 1234) -> str:
    """A precreated QR, scanned and paid."""
    payment_ref = ref()
    qr = adapter.create_order(order(payment_ref, fen)).content
    answer = client.post("/sandbox/pay", json={"qr_code": qr, "outcome": "SUCCESS"})
    assert answer.status_code == 200, answer.text
    return payment_ref


def refund(payment_ref: str, refund_ref: str, fen: int, total: int = 1234) -> RefundRequest:
    return RefundRequest(
        refund_ref, payment_ref, Money(fen, "CNY"), Money(total, "CNY"), NOTIFY_URL, "退货"
    )


def notify_bodies(client: TestClient, payment_ref: str) -> list[bytes]:
    """The notifies the sandbox queued for the trade, oldest first."""
    rows = sandbox_of(client).store.list_notifications(payment_ref, 100)
    return [row.body for row in reversed(rows)]


def test_native_qr_no_trade_until_scanned_and_a_closed_qr_stays_payable(
    adapter: AlipayAdapter, client: TestClient, creds: SandboxCredentials
) -> None:
    payment_ref = ref()
    action = adapter.create_order(order(payment_ref))
    assert action.kind is PayerActionKind.QR_CODE
    assert (action.content or "").startswith(BASE + "/sandbox/qr/bax")
    assert adapter.create_order(order(payment_ref)) == action  # idempotent on out_trade_no
    fresh = adapter.query(payment_ref)
    assert (fresh.state, fresh.raw_state) == (TradeState.NOT_FOUND, "ACQ.TRADE_NOT_EXIST")
    # Alipay has no trade to close: CLOSED for paygrid, but the QR can still be paid
    assert adapter.close(payment_ref) is CloseOutcome.CLOSED
    payer = client.post("/sandbox/pay", json={"qr_code": action.content, "outcome": "SUCCESS"})
    assert payer.json()["trade"]["trade_status"] == "TRADE_SUCCESS"
    trade = adapter.query(payment_ref)
    assert trade.state is TradeState.SUCCESS and trade.amount == Money(1234, "CNY")
    assert (trade.payment_ref, trade.raw_state) == (payment_ref, "TRADE_SUCCESS")
    assert trade.channel_trade_no == payer.json()["trade"]["trade_no"]
    assert (trade.merchant_id, trade.app_id) == (creds.seller_id, creds.app_id)
    assert trade.paid_at is not None and abs(trade.paid_at - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    assert adapter.close(payment_ref) is CloseOutcome.ALREADY_PAID


def test_scanned_unpaid_then_closed_and_closed_again(
    adapter: AlipayAdapter, client: TestClient
) -> None:
    payment_ref = ref()
    qr = adapter.create_order(order(payment_ref)).content or ""
    assert client.get(urlsplit(qr).path).status_code == 200  # the payer scans: a trade now
    assert adapter.query(payment_ref).state is TradeState.PENDING
    assert adapter.close(payment_ref) is CloseOutcome.CLOSED
    closed = adapter.query(payment_ref)
    assert (closed.state, closed.raw_state, closed.paid_at) == (
        TradeState.CLOSED,
        "TRADE_CLOSED",
        None,
    )
    # closing again: Alipay refuses (not WAIT_BUYER_PAY), the query says closed
    assert adapter.close(payment_ref) is CloseOutcome.CLOSED
    refused = client.post("/sandbox/pay", json={"qr_code": qr, "outcome": "SUCCESS"})
    assert refused.status_code == 409


def test_time_expire_is_the_orders_expiry(
    adapter: AlipayAdapter, client: TestClient, creds: SandboxCredentials
) -> None:
    payment_ref = ref()
    expire = datetime.now(UTC) + timedelta(minutes=5, microseconds=900_000)
    qr = adapter.create_order(order(payment_ref, expire_at=expire)).content or ""
    store = sandbox_of(client).store
    stored = store.get_trade(creds.app_id, payment_ref)
    assert stored is not None and stored.expire_at == int(expire.timestamp())  # rounded down
    client.get(urlsplit(qr).path)
    opened = store.get_trade(creds.app_id, payment_ref)
    assert opened is not None
    store.update_trade(opened.with_changes(expire_at=time.time() - 1))
    assert adapter.query(payment_ref).state is TradeState.CLOSED
    with pytest.raises(ValueError):
        adapter.create_order(order(ref(), expire_at=datetime(2030, 1, 1)))  # naive


@pytest.mark.parametrize(
    "method, gateway_method, product_code",
    [("page", "alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
     ("h5", "alipay.trade.wap.pay", "QUICK_WAP_WAY")],
)  # fmt: skip
def test_page_and_wap_pay_redirect_to_the_signed_gateway_request(
    adapter: AlipayAdapter,
    client: TestClient,
    creds: SandboxCredentials,
    method: str,
    gateway_method: str,
    product_code: str,
) -> None:
    payment_ref = ref()
    back = "https://shop.example/back?o=1"
    action = adapter.create_order(order(payment_ref, 500, method, return_url=back))
    assert action.kind is PayerActionKind.REDIRECT
    url = urlsplit(action.url or "")
    assert f"{url.scheme}://{url.netloc}{url.path}" == BASE + "/gateway.do"
    params = dict(parse_qsl(url.query))
    signing.verify_request(params, signing.load_public_key(creds.app_public_key))
    assert (params["method"], params["return_url"], params["notify_url"]) == (
        gateway_method,
        back,
        NOTIFY_URL,
    )
    assert f'"product_code":"{product_code}"' in params["biz_content"]
    assert ('"quit_url"' in params["biz_content"]) is (method == "h5")
    assert adapter.query(payment_ref).state is TradeState.NOT_FOUND  # not opened yet
    cashier = client.get(action.url or "", follow_redirects=False)
    assert cashier.status_code == 302
    assert cashier.headers["location"].startswith("/sandbox/cashier/")
    assert client.get(cashier.headers["location"]).status_code == 200
    assert adapter.query(payment_ref).state is TradeState.PENDING
    form = {"app_id": creds.app_id, "out_trade_no": payment_ref, "outcome": "SUCCESS"}
    returned = client.post("/sandbox/pay", data=form, follow_redirects=False)
    assert returned.status_code == 303 and returned.headers["location"].startswith(back + "&")
    assert adapter.query(payment_ref).amount == Money(500, "CNY")


def test_a_trade_refunded_in_full_is_paid_not_closed(
    adapter: AlipayAdapter, client: TestClient
) -> None:
    payment_ref = paid(adapter, client)
    first = adapter.refund(refund(payment_ref, "R1", 1000))
    assert (first.state, first.amount, first.refund_ref) == (
        RefundState.SUCCESS,
        Money(1000, "CNY"),
        "R1",
    )
    assert first.payment_ref == payment_ref and first.succeeded_at is not None
    assert adapter.query(payment_ref).raw_state == "TRADE_SUCCESS"
    rest = adapter.refund(refund(payment_ref, "R2", 234))
    assert (rest.state, rest.amount) == (RefundState.SUCCESS, Money(234, "CNY"))
    trade = adapter.query(payment_ref)
    assert trade.raw_state == "TRADE_CLOSED"  # Alipay's word after a full refund
    assert (trade.state, trade.amount) == (TradeState.SUCCESS, Money(1234, "CNY"))
    assert trade.paid_at is not None
    assert adapter.close(payment_ref) is CloseOutcome.ALREADY_PAID
    orders = client.get("/sandbox/orders", params={"limit": 1000}).json()["orders"]
    [listed] = [o for o in orders if o["out_trade_no"] == payment_ref]
    assert (listed["trade_state"], listed["trade_status"]) == ("REFUNDED", "TRADE_CLOSED")


def test_refunds_are_idempotent_on_out_request_no(
    adapter: AlipayAdapter, client: TestClient, creds: SandboxCredentials
) -> None:
    payment_ref = paid(adapter, client)
    once = adapter.refund(refund(payment_ref, "R-1", 300))
    again = adapter.refund(refund(payment_ref, "R-1", 300))  # fund_change N: the query tells
    assert once.state is again.state is RefundState.SUCCESS
    assert once.amount == again.amount == Money(300, "CNY")
    assert again.raw_state == "REFUND_SUCCESS" and again.refund_ref == "R-1"
    store = sandbox_of(client).store
    assert store.get_trade(creds.app_id, payment_ref).refunded == 300  # type: ignore[union-attr]
    with pytest.raises(ChannelError) as other_amount:
        adapter.refund(refund(payment_ref, "R-1", 301))
    assert (other_amount.value.code, other_amount.value.retryable) == (
        "ACQ.DISCORDANT_REPEAT_REQUEST",
        False,
    )
    with pytest.raises(ChannelError) as too_much:
        adapter.refund(refund(payment_ref, "R-2", 935))
    assert (too_much.value.code, too_much.value.retryable) == (
        "ACQ.REASON_TRADE_REFUND_FEE_ERR",
        False,
    )
    found = adapter.query_refund("R-1", payment_ref)
    assert (found.state, found.amount, found.payment_ref) == (
        RefundState.SUCCESS,
        Money(300, "CNY"),
        payment_ref,
    )
    assert found.merchant_id == creds.seller_id and found.succeeded_at is not None
    assert adapter.query_refund("R-none", payment_ref).state is RefundState.NOT_FOUND
    assert adapter.query_refund("R-1", ref()).state is RefundState.NOT_FOUND  # no such trade
    unpaid = ref()
    adapter.create_order(order(unpaid))
    with pytest.raises(ChannelError) as not_paid:
        adapter.refund(refund(unpaid, "R-3", 100))
    assert (not_paid.value.code, not_paid.value.retryable) == ("ACQ.TRADE_NOT_EXIST", False)


def test_payment_and_refund_notifies(
    adapter: AlipayAdapter, client: TestClient, creds: SandboxCredentials
) -> None:
    payment_ref = paid(adapter, client)
    [paid_body] = notify_bodies(client, payment_ref)
    callback = adapter.parse_callback({}, paid_body)
    assert isinstance(callback, Callback)
    trade = callback.trade
    assert (trade.state, trade.amount, trade.payment_ref) == (
        TradeState.SUCCESS,
        Money(1234, "CNY"),
        payment_ref,
    )
    assert (trade.merchant_id, trade.app_id) == (creds.seller_id, creds.app_id)
    assert callback.notify_id == dict(parse_qsl(paid_body.decode()))["notify_id"]
    adapter.refund(refund(payment_ref, "R-a", 300))
    adapter.refund(refund(payment_ref, "R-b", 200))
    adapter.refund(refund(payment_ref, "R-c", 734))  # the rest: the trade is TRADE_CLOSED
    refunds = [adapter.parse_callback({}, b) for b in notify_bodies(client, payment_ref)[1:]]
    assert all(isinstance(r, RefundCallback) for r in refunds)
    facts = [r.refund for r in refunds if isinstance(r, RefundCallback)]
    # each with its own amount, although the notify carries the total refunded so far
    assert [(f.refund_ref, f.amount) for f in facts] == [
        ("R-a", Money(300, "CNY")),
        ("R-b", Money(200, "CNY")),
        ("R-c", Money(734, "CNY")),
    ]
    assert {f.state for f in facts} == {RefundState.SUCCESS}
    assert [f.raw_state for f in facts] == ["TRADE_SUCCESS", "TRADE_SUCCESS", "TRADE_CLOSED"]
    assert all(f.payment_ref == payment_ref and f.succeeded_at for f in facts)
    assert all(f.merchant_id == creds.seller_id and f.defect is None for f in facts)


def test_closed_unpaid_notify_is_closed(adapter: AlipayAdapter, client: TestClient) -> None:
    payment_ref = ref()
    qr = adapter.create_order(order(payment_ref)).content or ""
    client.get(urlsplit(qr).path)
    adapter.close(payment_ref)
    [body] = notify_bodies(client, payment_ref)
    callback = adapter.parse_callback({}, body)
    assert isinstance(callback, Callback)
    assert (callback.trade.state, callback.trade.paid_at) == (TradeState.CLOSED, None)


def test_bill_download_and_parse(adapter: AlipayAdapter, client: TestClient) -> None:
    payment_ref = paid(adapter, client, 10000)
    adapter.refund(refund(payment_ref, "R-bill", 3000, total=10000))
    today = datetime.now(BEIJING).date()
    with pytest.raises(ChannelError) as not_ready:
        adapter.download_bill(today + timedelta(days=1))
    # Alipay's isp.bill_not_exist, as every channel says it: not out yet, fetch again later
    assert (not_ready.value.code, not_ready.value.retryable) == (BILL_NOT_READY, True)
    assert client.post("/sandbox/close-day", json={"date": today.isoformat()}).status_code == 200
    lines = adapter.parse_bill(adapter.download_bill(today))
    ours = sorted((x.kind, x.amount.minor, x.fee.minor, x.refund_ref) for x in lines
                  if x.payment_ref == payment_ref)  # fmt: skip
    # 0.60 % of 100.00 is 0.60 charged; 30 % of it (0.18) given back with the refund
    assert ours == [("PAYMENT", 10000, 60, None), ("REFUND", 3000, -18, "R-bill")]


def test_the_registry_factory_takes_the_gateway_base(creds: SandboxCredentials) -> None:
    built = build_adapter(creds.merchant_view(), "http://127.0.0.1:8102/")
    assert built.account.merchant_id == creds.seller_id
    assert built._client.config.gateway_url == "http://127.0.0.1:8102/gateway.do"
    given = build_adapter(creds.merchant_view(), "https://openapi.alipay.com/gateway.do")
    assert given._client.config.gateway_url == "https://openapi.alipay.com/gateway.do"
    without_pid = {k: v for k, v in creds.merchant_view().items() if k not in ("seller_id", "pid")}
    with pytest.raises(ValueError, match="seller"):
        build_adapter(without_pid, "http://127.0.0.1:8102")
