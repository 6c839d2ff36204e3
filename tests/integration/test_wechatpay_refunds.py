"""Refunds (退款) in the WeChat Pay sandbox, as a real process over real HTTP: the wechatpayv3
SDK's refund() and query_refund(), refund callbacks verified and decrypted by the SDK and by
paygrid's refunds module, refund faults, refund rows in the trade bill, and close-day."""

from __future__ import annotations

import gzip
import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from paygrid.channels.wechatpay import signing
from paygrid.channels.wechatpay.bill import REFUND_COLUMNS, parse_trade_bill, read_trade_bill
from paygrid.channels.wechatpay.refunds import (
    REFUNDS_PATH,
    RefundStatus,
    open_refund_notification,
    refund_error_retryable,
    refund_from_answer,
    refund_query_path,
    refund_request_body,
)
from paygrid.kernel.money import Money
from tests.integration.wechatpay_helpers import (
    CHINA,
    CallbackReceiver,
    SandboxProcess,
    beijing_date,
    callback_receiver,
    sdk_client,
    start_sandbox,
)

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("wechatpay-refunds"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        assert client.delete("/sandbox/faults").status_code == 200
        settings = {
            "retry_scale": 0.01,
            "callback_serial_mode": "public_key",
            "refund_delay_ms": 50,
        }
        assert client.post("/sandbox/settings", json=settings).status_code == 200
        yield client


@pytest.fixture
def creds(http: httpx.Client) -> dict[str, str]:
    data: dict[str, str] = http.get("/sandbox/credentials").json()
    return data


@pytest.fixture
def payments() -> Iterator[CallbackReceiver]:
    with callback_receiver() as receiver:
        yield receiver


@pytest.fixture
def wx(sandbox: SandboxProcess, creds: dict[str, str], payments: CallbackReceiver) -> Any:
    return sdk_client(creds, sandbox.base_url, payments.url, "public_key")


def new_ref(prefix: str = "PG") -> str:
    return f"{prefix}{secrets.token_hex(8).upper()}"


def paid_order(wx: Any, http: httpx.Client, total: int) -> dict[str, Any]:
    """An order paid by the sandbox payer; its Transaction."""
    ref = new_ref()
    code, message = wx.pay(description="退款测试", out_trade_no=ref, amount={"total": total})
    assert code == 200, message
    paid = http.post("/sandbox/pay", json={"code_url": json.loads(message)["code_url"]})
    assert paid.status_code == 200, paid.text
    transaction: dict[str, Any] = paid.json()["transaction"]
    return transaction


def refund(wx: Any, fen: int, total: int, **extra: Any) -> tuple[int, dict[str, Any]]:
    """wx.refund(); a fresh out_refund_no unless one is given."""
    extra.setdefault("out_refund_no", new_ref("RF"))
    amount = {"refund": fen, "total": total, "currency": "CNY"}
    code, message = wx.refund(amount=amount, **extra)
    answer: dict[str, Any] = json.loads(message) if message else {}
    return code, answer


def eventually(probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def query_until(wx: Any, out_refund_no: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        code, message = wx.query_refund(out_refund_no=out_refund_no)
        assert code == 200, message
        answer: dict[str, Any] = json.loads(message)
        return answer if answer["status"] == status else None

    return eventually(probe)


def close_day(http: httpx.Client, day: str) -> httpx.Response:
    return http.post("/sandbox/close-day", json={"date": day})


# --- the SDK: full, partial, several, idempotent, over-refund ---------------------------------


def test_sdk_partial_refunds_up_to_the_total(
    wx: Any, http: httpx.Client, creds: dict[str, str]
) -> None:
    paid = paid_order(wx, http, 1_000)
    ref = paid["out_trade_no"]
    with callback_receiver() as refunds:
        first = new_ref("RF")
        code, answer = refund(
            wx,
            300,
            1_000,
            out_refund_no=first,
            out_trade_no=ref,
            reason="缺货",
            notify_url=refunds.url,
        )
        assert code == 200, answer
        assert answer["status"] == "PROCESSING"
        assert (answer["out_refund_no"], answer["out_trade_no"]) == (first, ref)
        assert answer["transaction_id"] == paid["transaction_id"]
        assert answer["refund_id"].isdigit() and len(answer["refund_id"]) == 29
        assert answer["create_time"].endswith("+08:00") and "success_time" not in answer
        assert answer["channel"] == "ORIGINAL"
        amount = answer["amount"]
        assert (amount["refund"], amount["total"], amount["currency"]) == (300, 1_000, "CNY")
        assert (amount["payer_refund"], amount["payer_total"]) == (300, 1_000)
        assert amount["refund_fee"] == 1  # 0.20% of 10.00 is 2 fen; 3/10 of it, half up

        again_code, again = refund(
            wx, 300, 1_000, out_refund_no=first, out_trade_no=ref, notify_url=refunds.url
        )
        assert (again_code, again["refund_id"]) == (200, answer["refund_id"])  # idempotent
        code, other = refund(wx, 301, 1_000, out_refund_no=first, out_trade_no=ref)
        assert (code, other["code"]) == (400, "INVALID_REQUEST")  # same number, other amount

        code, message = wx.query(out_trade_no=ref)
        assert (code, json.loads(message)["trade_state"]) == (200, "REFUND")

        by_id = paid["transaction_id"]
        code, second = refund(wx, 500, 1_000, transaction_id=by_id, notify_url=refunds.url)
        assert code == 200, second
        code, over = refund(wx, 201, 1_000, out_trade_no=ref, notify_url=refunds.url)
        assert (code, over["code"]) == (400, "INVALID_REQUEST")
        assert not refund_error_retryable(over["code"], code)
        code, last = refund(wx, 200, 1_000, out_trade_no=ref, notify_url=refunds.url)
        assert code == 200, last
        assert last["amount"]["refund_fee"] == 0  # the fee of 8/10 (2 fen) is already back
        code, none_left = refund(wx, 1, 1_000, out_trade_no=ref, notify_url=refunds.url)
        assert (code, none_left["code"], none_left["message"]) == (
            400,
            "INVALID_REQUEST",
            "订单已全额退款",
        )

        received = refunds.wait_for(3)
        notices = [wx.callback(r.headers, r.body) for r in received]
        assert all(n is not None for n in notices), "the SDK did not verify/decrypt"
        by_no = {n["resource"]["out_refund_no"]: n for n in notices}
        assert set(by_no) == {first, second["out_refund_no"], last["out_refund_no"]}
        notice = by_no[first]
        assert (notice["event_type"], notice["summary"]) == ("REFUND.SUCCESS", "退款成功")
        envelope = json.loads(received[0].body)
        assert envelope["resource"]["associated_data"] == "refund"
        assert envelope["resource"]["original_type"] == "refund"
        resource = notice["resource"]
        assert resource["mchid"] == creds["mchid"]
        assert (resource["out_trade_no"], resource["transaction_id"]) == (ref, by_id)
        assert (resource["refund_id"], resource["refund_status"]) == (
            answer["refund_id"],
            "SUCCESS",
        )
        assert resource["user_received_account"]
        assert resource["success_time"].endswith("+08:00")
        assert resource["amount"] == {
            "total": 1_000,
            "refund": 300,
            "payer_total": 1_000,
            "payer_refund": 300,
        }

    done = query_until(wx, first, "SUCCESS")
    assert done["refund_id"] == answer["refund_id"]
    assert done["success_time"] == resource["success_time"]
    fees = [a["amount"]["refund_fee"] for a in (answer, second, last)]
    assert sum(fees) == 2  # the whole fee of the payment comes back, not a fen more


def test_sdk_full_refund_and_refusals(wx: Any, http: httpx.Client) -> None:
    paid = paid_order(wx, http, 2_500)
    ref = paid["out_trade_no"]
    code, answer = refund(wx, 2_500, 2_500, out_trade_no=ref)
    assert code == 200, answer
    done = query_until(wx, answer["out_refund_no"], "SUCCESS")
    assert done["amount"]["refund_fee"] == 5  # the whole fee of 25.00 at 0.20%

    code, error = refund(wx, 1, 1, out_trade_no=new_ref("NOSUCH"))
    assert (code, error["code"]) == (404, "RESOURCE_NOT_EXISTS")
    unpaid = new_ref()
    assert wx.pay(description="unpaid", out_trade_no=unpaid, amount={"total": 100})[0] == 200
    code, error = refund(wx, 100, 100, out_trade_no=unpaid)
    assert (code, error["code"]) == (404, "RESOURCE_NOT_EXISTS")
    other = paid_order(wx, http, 800)["out_trade_no"]
    code, error = refund(wx, 100, 900, out_trade_no=other)
    assert (code, error["code"]) == (400, "PARAM_ERROR")  # amount.total is not the order's
    code, error = refund(wx, 900, 800, out_trade_no=other)
    assert (code, error["code"]) == (400, "PARAM_ERROR")  # above the order total
    code, error = refund(wx, 100, 800, out_trade_no=other, out_refund_no="bad#no")
    assert (code, error["code"]) == (400, "PARAM_ERROR")
    code, message = wx.query_refund(out_refund_no=new_ref("RFNONE"))
    assert (code, json.loads(message)["code"]) == (404, "RESOURCE_NOT_EXISTS")


# --- refund faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"), [("refund_closed_rate", "CLOSED"), ("refund_abnormal_rate", "ABNORMAL")]
)
def test_refund_ends_closed_or_abnormal(
    fault: str, status: str, wx: Any, http: httpx.Client
) -> None:
    paid = paid_order(wx, http, 600)
    ref = paid["out_trade_no"]
    http.post("/sandbox/faults", json={fault: 1})
    with callback_receiver() as refunds:
        code, answer = refund(wx, 600, 600, out_trade_no=ref, notify_url=refunds.url)
        assert code == 200, answer
        [received] = refunds.wait_for(1)
    notice = wx.callback(received.headers, received.body)
    assert notice["event_type"] == f"REFUND.{status}"
    assert notice["resource"]["refund_status"] == status
    assert "success_time" not in notice["resource"]
    assert query_until(wx, answer["out_refund_no"], status)["status"] == status
    http.delete("/sandbox/faults")
    code, again = refund(wx, 600, 600, out_trade_no=ref)
    if status == "CLOSED":  # a closed refund moved no money: the amount is refundable again
        assert code == 200, again
    else:  # an abnormal one did; it is settled by hand, not refunded twice
        assert (code, again["code"]) == (400, "INVALID_REQUEST")


def test_refund_callback_faults_and_retries(wx: Any, http: httpx.Client) -> None:
    http.post("/sandbox/faults", json={"duplicate_rate": 1})
    paid = paid_order(wx, http, 300)
    ref = paid["out_trade_no"]
    with callback_receiver(statuses=[500]) as refunds:
        code, answer = refund(wx, 100, 300, out_trade_no=ref, notify_url=refunds.url)
        assert code == 200, answer
        received = refunds.wait_for(3)  # two copies, one of them refused once and sent again
    assert len({json.loads(r.body)["id"] for r in received}) == 1
    rows = http.get("/sandbox/notifications", params={"out_refund_no": answer["out_refund_no"]})
    listed = rows.json()["notifications"]
    assert sorted(n["state"] for n in listed) == ["DELIVERED", "DELIVERED"]
    assert sorted(n["attempts"] for n in listed) == [1, 2]

    http.post("/sandbox/faults", json={"duplicate_rate": 0, "drop_rate": 1})
    with callback_receiver() as refunds:
        code, dropped = refund(wx, 100, 300, out_trade_no=ref, notify_url=refunds.url)
        query_until(wx, dropped["out_refund_no"], "SUCCESS")  # 补单: the query tells
        time.sleep(0.5)
        assert refunds.received == []
    rows = http.get("/sandbox/notifications", params={"out_refund_no": dropped["out_refund_no"]})
    assert [n["state"] for n in rows.json()["notifications"]] == ["DROPPED"]


# --- paygrid's refunds module against the sandbox ---------------------------------------------


def signed_call(
    sandbox: SandboxProcess, creds: dict[str, str], method: str, path: str, payload: Any = None
) -> httpx.Response:
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
    auth = signing.build_authorization(
        method,
        path,
        body,
        mchid=creds["mchid"],
        serial_no=creds["cert_serial_no"],
        private_key=signing.load_private_key(creds["private_key"]),
    )
    headers = {"Authorization": auth, "Wechatpay-Serial": creds["public_key_id"]}
    if body:
        headers["Content-Type"] = "application/json"
    with sandbox.http() as client:
        response = client.request(method, path, content=body, headers=headers)
    public_key = signing.load_public_key(creds["public_key"])
    signing.verify_response(
        response.headers,
        response.content,
        lambda serial: public_key if serial == creds["public_key_id"] else None,
    )
    return response


def test_paygrid_refund_protocol_against_the_sandbox(
    sandbox: SandboxProcess, wx: Any, http: httpx.Client, creds: dict[str, str]
) -> None:
    paid = paid_order(wx, http, 10_001)
    ref, refund_ref = paid["out_trade_no"], new_ref("PGRF")
    with callback_receiver() as refunds:
        body = refund_request_body(ref, refund_ref, 4_000, 10_001, "CNY", "退货", refunds.url)
        answer = signed_call(sandbox, creds, "POST", REFUNDS_PATH, body)
        assert answer.status_code == 200, answer.text
        created = refund_from_answer(answer.json())
        assert created.status is RefundStatus.PROCESSING
        assert (created.refund_ref, created.payment_ref) == (refund_ref, ref)
        assert (created.refund, created.total, created.currency) == (4_000, 10_001, "CNY")
        assert created.channel_trade_no == paid["transaction_id"]
        [received] = refunds.wait_for(1)
    public_key = signing.load_public_key(creds["public_key"])
    signing.verify_response(dict(received.headers.items()), received.body, lambda _: public_key)
    notice = open_refund_notification(received.body, creds["apiv3_key"])
    assert notice.event_type == "REFUND.SUCCESS"
    assert notice.refund.status is RefundStatus.SUCCESS
    assert notice.refund.channel_refund_id == created.channel_refund_id
    assert (notice.refund.refund, notice.refund.merchant_id) == (4_000, creds["mchid"])
    assert notice.refund.succeeded_at is not None
    queried = signed_call(sandbox, creds, "GET", refund_query_path(refund_ref))
    result = refund_from_answer(queried.json())
    assert (result.status, result.succeeded_at) == (
        RefundStatus.SUCCESS,
        notice.refund.succeeded_at,
    )
    missing = signed_call(sandbox, creds, "GET", refund_query_path(new_ref("PGRFNONE")))
    assert (missing.status_code, missing.json()["code"]) == (404, "RESOURCE_NOT_EXISTS")

    quiet = refund_request_body(ref, new_ref("PGRF"), 1, 10_001, "CNY")  # no notify_url
    answer = signed_call(sandbox, creds, "POST", REFUNDS_PATH, quiet)
    assert answer.status_code == 200, answer.text
    query_until(wx, quiet["out_refund_no"], "SUCCESS")
    listed = http.get("/sandbox/notifications", params={"out_refund_no": quiet["out_refund_no"]})
    assert listed.json()["notifications"] == []  # no notify_url: no notification


# --- trade bill and close-day -----------------------------------------------------------------


def download(wx: Any, day: str, bill_type: str) -> tuple[int, bytes | dict[str, Any]]:
    code, message = wx.trade_bill(bill_date=day, bill_type=bill_type)
    if code != 200:
        return code, json.loads(message)
    code, gz = wx.download_bill(json.loads(message)["download_url"])
    assert code == 200
    return code, gzip.decompress(gz)


def test_bill_lists_refunds_once_the_day_is_closed(
    sandbox: SandboxProcess, wx: Any, http: httpx.Client, tmp_path: Path
) -> None:
    full = paid_order(wx, http, 1_000)
    partial = paid_order(wx, http, 555)
    day = beijing_date(full["success_time"]).isoformat()
    numbers = []
    for ref, fen, total in (
        (full["out_trade_no"], 400, 1_000),
        (full["out_trade_no"], 600, 1_000),
        (partial["out_trade_no"], 55, 555),
    ):
        code, answer = refund(wx, fen, total, out_trade_no=ref)
        assert code == 200, answer
        numbers.append(answer["out_refund_no"])
    for number in numbers:
        query_until(wx, number, "SUCCESS")

    today = datetime.now(CHINA).date()
    assert close_day(http, (today + timedelta(days=1)).isoformat()).status_code == 400
    # this is the module's only test that closes a day, so today is still open here
    if day == today.isoformat():  # (unless the payment was made just before midnight)
        code, error = download(wx, day, "ALL")
        assert (code, error) == (
            400,
            {"code": "STATEMENT_CREATING", "message": "请求的账单正在生成中"},
        )
    closed = close_day(http, day)
    assert closed.status_code == 200 and closed.json()["date"] == day
    assert close_day(http, day).json() == closed.json()  # closing again changes nothing

    code, content = download(wx, day, "ALL")
    assert code == 200 and isinstance(content, bytes)
    lines = parse_trade_bill(content)
    refund_lines = {line.refund_ref: line for line in lines if line.kind == "REFUND"}
    assert set(numbers) <= set(refund_lines)
    first = refund_lines[numbers[0]]
    assert (first.payment_ref, first.channel_trade_no) == (
        full["out_trade_no"],
        full["transaction_id"],
    )
    assert first.amount == Money(400, "CNY")
    assert refund_lines[numbers[2]].amount == Money(55, "CNY")
    full_fees = [refund_lines[n].fee.minor for n in numbers[:2]]
    payment_fee = next(
        line.fee.minor
        for line in lines
        if line.kind == "PAYMENT" and line.payment_ref == full["out_trade_no"]
    )
    assert payment_fee == 2 and sum(full_fees) == -payment_fee  # the fee returned, to the fen
    assert first.extra["退款状态"] == "SUCCESS" and first.extra["交易状态"] == "REFUND"
    assert first.extra["订单金额"] == "0.00"
    summary = read_trade_bill(content).summary
    refunded = sum(line.amount.minor for line in lines if line.kind == "REFUND")
    assert summary["退款总金额"] == f"{refunded // 100}.{refunded % 100:02d}"

    code, content = download(wx, day, "REFUND")
    assert code == 200 and isinstance(content, bytes)
    parsed = read_trade_bill(content)
    assert parsed.columns == REFUND_COLUMNS
    assert {row["交易状态"] for row in parsed.rows} == {"REFUND"}
    assert {line.refund_ref for line in parse_trade_bill(content)} >= set(numbers)
    code, content = download(wx, day, "SUCCESS")
    assert code == 200 and isinstance(content, bytes)
    assert {line.kind for line in parse_trade_bill(content)} == {"PAYMENT"}

    http.post("/sandbox/faults", json={"extra_lines": 1, "wrong_amount_rate": 1})
    code, content = download(wx, day, "REFUND")
    assert code == 200 and isinstance(content, bytes)
    faulty = {line.refund_ref: line for line in parse_trade_bill(content)}
    assert faulty[numbers[0]].amount == Money(401, "CNY")  # one fen off
    [extra] = [line for ref, line in faulty.items() if ref not in refund_lines]
    assert extra.kind == "REFUND" and extra.payment_ref.startswith("SBXEXTRA")


def test_bill_of_a_day_without_trades_and_bad_close_days(wx: Any, http: httpx.Client) -> None:
    code, error = download(wx, "2020-01-01", "ALL")
    assert (code, error["code"]) == (400, "NO_STATEMENT_EXIST")  # an ended day, nothing on it
    for bad in ({"date": "2020-13-01"}, {"date": 20200101}, {}):
        response = http.post("/sandbox/close-day", json=bad)
        assert (response.status_code, response.json()["code"]) == (400, "PARAM_ERROR")
