"""The UnionPay sandbox as a real process, driven by paygrid's UnionPayAdapter (real HTTP, real
signatures and certificates); notifications land on a real local HTTP server.

No maintained Python ACP client exists on PyPI to drive it with (docs/unionpay.md): the
adapter's signing is checked against the formats' definition in tests/unit/channels."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from paygrid.channels.ports import (
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
from paygrid.channels.unionpay import signing, zm
from paygrid.channels.unionpay.adapter import UnionPayAdapter, build_adapter, read_form
from paygrid.channels.unionpay.parsing import order_id_of, txn_time_of
from paygrid.kernel.money import Money
from tests.integration.unionpay_helpers import Receiver, receiver, ref, start_sandbox
from tests.integration.wechatpay_helpers import SandboxProcess

pytestmark = pytest.mark.timeout(120)
CNY = "CNY"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("unionpay-sandbox"))
    try:
        with process.http() as http:
            http.post("/sandbox/settings", json={"retry_scale": 0.002}).raise_for_status()
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        client.delete("/sandbox/faults").raise_for_status()
        yield client
        client.delete("/sandbox/faults").raise_for_status()


@pytest.fixture
def creds(http: httpx.Client) -> dict[str, str]:
    answer: dict[str, str] = http.get("/sandbox/credentials").json()
    return answer


@pytest.fixture
def adapter(creds: dict[str, str], sandbox: SandboxProcess) -> UnionPayAdapter:
    return build_adapter(creds, sandbox.base_url)


@pytest.fixture
def back() -> Iterator[Receiver]:
    with receiver() as got:
        yield got


def order(back: Receiver, method: str = "native", total: int = 1234, **extra: Any) -> OrderRequest:
    return OrderRequest(
        payment_ref=ref("pay"),
        amount=Money(total, CNY),
        description="一杯咖啡",
        notify_url=back.url,
        method=method,
        expire_at=datetime.now(UTC) + timedelta(minutes=30),
        **extra,
    )


def paid_qr(http: httpx.Client, adapter: UnionPayAdapter, back: Receiver, total: int = 1234) -> str:
    request = order(back, total=total)
    action = adapter.create_order(request)
    assert action.kind is PayerActionKind.QR_CODE and action.content
    answer = http.post("/sandbox/pay", json={"qrCode": action.content, "outcome": "SUCCESS"})
    assert answer.status_code == 200, answer.text
    return request.payment_ref


def test_credentials_are_a_merchants_certificates(
    http: httpx.Client, creds: dict[str, str]
) -> None:
    assert creds["mer_id"].isdigit() and len(creds["mer_id"]) == 15
    cert = signing.load_cert(creds["sign_cert"])
    assert creds["cert_id"] == str(cert.serial_number)  # certId: the serial in decimal
    assert creds["front_trans_url"].endswith("/gateway/api/frontTransReq.do")
    assert creds["back_trans_url"].endswith("/gateway/api/backTransReq.do")
    assert creds["single_query_url"].endswith("/gateway/api/queryTrans.do")
    pfx = http.get("/sandbox/certs/merchant.pfx").content
    key, in_pfx, _ = pkcs12.load_key_and_certificates(pfx, creds["pfx_password"].encode())
    assert in_pfx is not None and in_pfx.serial_number == cert.serial_number
    assert key is not None and signing.private_pem(key) == creds["sign_private_key"]  # type: ignore[arg-type]
    root = http.get("/sandbox/certs/acp_root.cer").text
    assert root == creds["root_cert"]
    signing.CertVerifier(creds["root_cert"], creds["middle_cert"])  # the chain holds


def test_qr_consume_paid_notified_and_queried(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    payment_ref = ref("pay")
    assert adapter.query(payment_ref).state is TradeState.PENDING  # 34: not there yet
    payment_ref = paid_qr(http, adapter, back)
    [body] = back.wait_for(1)
    callback = adapter.parse_callback({}, body)
    assert isinstance(callback, Callback)
    trade = callback.trade
    assert (trade.payment_ref, trade.state, trade.amount) == (
        payment_ref,
        TradeState.SUCCESS,
        Money(1234, CNY),
    )
    assert trade.merchant_id == adapter.account.merchant_id
    assert trade.channel_trade_no and len(trade.channel_trade_no) == 21
    assert callback.notify_id == f"01:{trade.channel_trade_no}"
    queried = adapter.query(payment_ref)
    assert (queried.state, queried.channel_trade_no) == (TradeState.SUCCESS, trade.channel_trade_no)
    assert adapter.close(payment_ref) is CloseOutcome.ALREADY_PAID
    # the same order again is the same consume (idempotent on orderId + txnTime)
    form = read_form(body)
    assert form["orderId"] == order_id_of(payment_ref) and form["txnTime"] == txn_time_of(
        payment_ref
    )


def test_a_tampered_notification_is_refused(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    paid_qr(http, adapter, back, total=500)
    [body] = back.wait_for(1)
    forged = body.replace(b"txnAmt=500", b"txnAmt=5")
    with pytest.raises(Exception, match="signature"):
        adapter.parse_callback({}, forged)


def test_front_form_to_the_pay_page_and_back_to_front_url(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    request = order(back, method="page", return_url="http://127.0.0.1:9/shop/return",
                    payer_bank="ICBC")  # fmt: skip
    action = adapter.create_order(request)
    assert action.kind is PayerActionKind.FORM and action.url
    assert action.fields["channelType"] == "07" and action.fields["issInsCode"] == "01020000"
    assert action.fields["payTimeout"] == beijing(request)
    assert adapter.query(request.payment_ref).state is TradeState.PENDING  # not posted yet
    # the payer's browser posts the form: UnionPay's pay page
    posted = http.post(action.url, data=dict(action.fields), follow_redirects=True)
    assert posted.status_code == 200 and "确认支付" in posted.text and "01020000" in posted.text
    token = posted.url.path.rsplit("/", 1)[-1]
    paid = http.post("/sandbox/pay", data={"token": token, "outcome": "SUCCESS"})
    assert paid.status_code == 200 and 'id="front-post"' in paid.text
    assert 'action="http://127.0.0.1:9/shop/return"' in paid.text
    [body] = back.wait_for(1)
    assert isinstance(adapter.parse_callback({}, body), Callback)
    assert adapter.query(request.payment_ref).state is TradeState.SUCCESS
    # what the browser posts back to frontUrl is signed by UnionPay too
    answer = http.post("/sandbox/pay", json={"token": token}).json()
    fields = answer["front_post"]["fields"]
    adapter._client.verify_notification(fields)
    assert fields["respCode"] == "00" and fields["orderId"] == order_id_of(request.payment_ref)


def beijing(request: OrderRequest) -> str:
    assert request.expire_at is not None
    return request.expire_at.astimezone(zm.BEIJING).strftime("%Y%m%d%H%M%S")


def test_declined_consume_is_failed_by_query_only(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    request = order(back)
    action = adapter.create_order(request)
    answer = http.post("/sandbox/pay", json={"qrCode": action.content, "outcome": "FAIL"})
    assert answer.json()["order"]["trade_state"] == "FAILED"
    trade = adapter.query(request.payment_ref)
    assert (trade.state, trade.raw_state) == (TradeState.FAILED, "01")
    assert adapter.close(request.payment_ref) is CloseOutcome.CLOSED
    assert back.received == []  # UnionPay notifies successes only


def test_past_pay_timeout_nothing_is_taken(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    request = OrderRequest(
        payment_ref=ref("pay"),
        amount=Money(100, CNY),
        description="x",
        notify_url=back.url,
        method="native",
        expire_at=datetime.now(UTC) + timedelta(seconds=1.2),
    )
    action = adapter.create_order(request)
    assert adapter.close(request.payment_ref) is CloseOutcome.CLOSED
    import time

    time.sleep(1.3)
    late = http.post("/sandbox/pay", json={"qrCode": action.content, "outcome": "SUCCESS"})
    assert late.status_code == 409 and late.json()["code"] == "PAY_TIMEOUT"
    assert adapter.query(request.payment_ref).state is TradeState.PENDING


def test_refunds_partial_repeat_and_over(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    payment_ref = paid_qr(http, adapter, back, total=1000)
    back.wait_for(1)

    def refund(amount: int, refund_ref: str) -> Any:
        return adapter.refund(
            RefundRequest(refund_ref, payment_ref, Money(amount, CNY), Money(1000, CNY), back.url)
        )

    first = ref("rfd")
    done = refund(300, first)
    assert (done.refund_ref, done.state, done.amount) == (first, RefundState.SUCCESS,
                                                           Money(300, CNY))  # fmt: skip
    again = refund(300, first)  # the same refund again: the same transaction
    assert again.channel_refund_no == done.channel_refund_no
    notes = back.wait_for(2)
    callback = adapter.parse_callback({}, notes[1])
    assert isinstance(callback, RefundCallback)
    assert (callback.refund.refund_ref, callback.refund.state) == (first, RefundState.SUCCESS)
    with pytest.raises(ChannelError) as over:
        refund(701, ref("rfd"))
    assert (over.value.code, over.value.retryable) == ("36", False)
    assert adapter.query_refund(ref("rfd"), payment_ref).state is RefundState.NOT_FOUND
    listed = http.get("/sandbox/refunds").json()["refunds"]
    assert {"out_refund_no": first, "out_trade_no": payment_ref, "amount": 300} in [
        {k: r[k] for k in ("out_refund_no", "out_trade_no", "amount")} for r in listed
    ]


def test_revoke_is_whole_and_same_day(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    payment_ref = paid_qr(http, adapter, back, total=800)
    query_id = adapter.query(payment_ref).channel_trade_no
    assert query_id is not None
    revoke_ref = ref("rfd")
    fields = {
        "orderId": order_id_of(revoke_ref),
        "txnTime": txn_time_of(revoke_ref),
        "txnType": "31",
        "txnSubType": "00",
        "bizType": "000201",
        "channelType": "07",
        "txnAmt": "800",
        "origQryId": query_id,
        "backUrl": back.url,
    }
    answer = adapter._client.back(fields)
    assert answer["respCode"] == "00"
    found = adapter.query_refund(revoke_ref, payment_ref)
    assert (found.state, found.amount) == (RefundState.SUCCESS, Money(800, CNY))
    notes = back.wait_for(2)
    callback = adapter.parse_callback({}, notes[-1])
    assert isinstance(callback, RefundCallback) and callback.notify_id.startswith("31:")


def test_pending_answers_are_queried_never_failed(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    payment_ref = paid_qr(http, adapter, back, total=900)
    http.post("/sandbox/faults", json={"pending_rate": 1.0}).raise_for_status()
    with pytest.raises(ChannelError) as pending:
        adapter.query(payment_ref)
    assert pending.value.retryable and pending.value.code in ("03", "04", "05")
    refund_ref = ref("rfd")
    request = RefundRequest(refund_ref, payment_ref, Money(900, CNY), Money(900, CNY), back.url)
    with pytest.raises(ChannelError) as answered:
        adapter.refund(request)  # the consume query is pending: retry later
    assert answered.value.retryable
    http.delete("/sandbox/faults").raise_for_status()
    query_id = adapter.query(payment_ref).channel_trade_no
    http.post("/sandbox/faults", json={"pending_rate": 1.0}).raise_for_status()
    again = RefundRequest(
        refund_ref, payment_ref, Money(900, CNY), Money(900, CNY), back.url, None, query_id
    )
    with pytest.raises(ChannelError) as refund_pending:
        adapter.refund(again)
    assert refund_pending.value.retryable  # 03/04/05: done or not, the query tells
    http.delete("/sandbox/faults").raise_for_status()
    assert adapter.query_refund(refund_ref, payment_ref).state is RefundState.SUCCESS


def test_notifications_retried_until_http_200(http: httpx.Client, adapter: UnionPayAdapter) -> None:
    with receiver([500, 404]) as back:
        payment_ref = paid_qr(http, adapter, back)
        bodies = back.wait_for(3)
    assert bodies[0] == bodies[1] == bodies[2]  # the same signed form each time
    listed = http.get(f"/sandbox/notifications?order_id={order_id_of(payment_ref)}").json()
    [row] = listed["notifications"]
    assert (row["state"], row["attempts"], row["last_status"]) == ("DELIVERED", 3, 200)


def test_bad_signature_and_wrong_cert_id_are_refused(
    creds: dict[str, str], sandbox: SandboxProcess, back: Receiver
) -> None:
    other = dict(creds, sign_private_key=signing.private_pem(_new_key()))
    forged = build_adapter(other, sandbox.base_url)
    with pytest.raises(ChannelError) as refused:
        forged.create_order(order(back))
    assert (refused.value.code, refused.value.retryable) == ("11", False)


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_file_transfer_zm_after_close_day(
    http: httpx.Client, adapter: UnionPayAdapter, back: Receiver
) -> None:
    today = datetime.now(zm.BEIJING).date()
    payment_ref = paid_qr(http, adapter, back, total=2000)
    refund_ref = ref("rfd")
    adapter.refund(RefundRequest(refund_ref, payment_ref, Money(500, CNY), Money(2000, CNY),
                                 back.url))  # fmt: skip
    closed = http.post("/sandbox/close-day", json={"date": today.isoformat()})
    assert closed.status_code == 200 and closed.json()["bill_ready"]
    content = adapter.download_bill(today)
    lines = adapter.parse_bill(content)
    mine = [line for line in lines if payment_ref in (line.payment_ref, line.refund_ref or "")]
    by_kind = {line.kind: line for line in lines if line.payment_ref == payment_ref}
    assert by_kind["PAYMENT"].amount == Money(2000, CNY)
    assert by_kind["PAYMENT"].fee == Money(10, CNY)  # 0.50 %
    refund_line = next(line for line in lines if line.refund_ref == refund_ref)
    assert (refund_line.amount, refund_line.fee) == (Money(500, CNY), Money(-3, CNY))
    assert len(mine) == 2 and refund_line.payment_ref == payment_ref


def test_file_not_ready_and_restart_keeps_state(tmp_path: Path) -> None:
    process = start_sandbox(tmp_path)
    try:
        with process.http() as http:
            creds = http.get("/sandbox/credentials").json()
            adapter = build_adapter(creds, process.base_url)
            today = datetime.now(zm.BEIJING).date()
            with pytest.raises(ChannelError) as early:
                adapter.download_bill(today)
            assert (early.value.code, early.value.retryable) == ("BILL_NOT_READY", True)
            with receiver() as back:
                payment_ref = paid_qr(http, adapter, back)
    finally:
        process.stop()
    again = start_sandbox(tmp_path)
    try:
        with again.http() as http:
            assert http.get("/sandbox/credentials").json()["cert_id"] == creds["cert_id"]
            adapter = build_adapter(creds, again.base_url)
            assert adapter.query(payment_ref).state is TradeState.SUCCESS
    finally:
        again.stop()


def test_settle_date_mmdd_resolves_to_the_latest_past_day() -> None:
    from paygrid.channels.unionpay.sandbox.bills import day_of_mmdd

    now = datetime(2026, 1, 2, 12, tzinfo=zm.BEIJING).timestamp()
    assert day_of_mmdd("0101", now) == date(2026, 1, 1)
    assert day_of_mmdd("1231", now) == date(2025, 12, 31)
    assert day_of_mmdd("1301", now) is None


def test_form_fields_parse_back(http: httpx.Client, adapter: UnionPayAdapter) -> None:
    with receiver() as back:
        paid_qr(http, adapter, back)
        [body] = back.wait_for(1)
    form = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))
    assert form["signMethod"] == "01" and form["signPubKeyCert"].startswith("-----BEGIN")


def test_close_day_settles_the_net_into_the_reserve_account(tmp_path: Path) -> None:
    from paygrid.channels.bank.settle import BANK_URL_ENV
    from paygrid.channels.bank.statement import parse_mt940
    from tests.integration.wechatpay_helpers import start_module

    bank = start_module(
        "paygrid.channels.bank.sandbox", "bank sandbox listening on ", tmp_path / "b"
    )
    union = start_sandbox(tmp_path / "u", env_extra={BANK_URL_ENV: bank.base_url})
    try:
        http, banking = union.http(), bank.http()
        creds = http.get("/sandbox/credentials").json()
        adapter = build_adapter(creds, union.base_url)
        with receiver() as back:
            payment_ref = paid_qr(http, adapter, back, total=10_000)
            adapter.refund(RefundRequest(ref("rfd"), payment_ref, Money(2_000, CNY),
                                         Money(10_000, CNY), back.url))  # fmt: skip
        day = datetime.now(zm.BEIJING).date()
        net = 10_000 - 50 - (2_000 - 10)  # consume − fee − (refund − the fee given back)
        settlement = http.post("/sandbox/close-day", json={"date": day.isoformat()}).json()
        assert (settlement["settlement"]["status"], settlement["settlement"]["net"]) == (
            "SETTLED", net)  # fmt: skip
        account = banking.get("/sandbox/credentials").json()
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        due = (day + timedelta(days=1)).isoformat()
        url = f"/v1/accounts/{account['account']}/statements/{due}"
        [entry] = parse_mt940(banking.get(url, headers=auth).content, "s").entries
        assert entry.amount == net and entry.reference.startswith(f"UP{day:%Y%m%d}")
        assert "中国银联股份有限公司" in entry.details
    finally:
        union.stop()
        bank.stop()
