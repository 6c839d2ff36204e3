"""The NetsUnion sandbox as a real process, driven by paygrid's adapter over real HTTP:
agreements with the SMS code, debits with asynchronous signed notifications, queries, refunds,
close, clearing files, per-bank faults and a restart."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import httpx
import pytest

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.adapter import NetsUnionAdapter
from paygrid.channels.netsunion.bill_import import import_bill
from paygrid.channels.ports import (
    AgreementState,
    Callback,
    CallbackReply,
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
from tests.integration.netsunion_helpers import (
    Receiver,
    adapter_for,
    agreement_request,
    new_ref,
    receiver,
    sign_agreement,
    sms_code,
    start_sandbox,
)
from tests.integration.wechatpay_helpers import SandboxProcess
from tests.support import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    process = start_sandbox(tmp_path_factory.mktemp("netsunion-sandbox"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def http(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.http() as client:
        assert client.delete("/sandbox/faults").status_code == 200
        knobs = {"retry_scale": 0.01, "debits_wait": False, "debit_delay_ms": 100}
        assert client.post("/sandbox/settings", json=knobs).status_code == 200
        yield client


@pytest.fixture(scope="module")
def adapter(sandbox: SandboxProcess) -> NetsUnionAdapter:
    return adapter_for(sandbox)


@pytest.fixture
def member(adapter: NetsUnionAdapter) -> Iterator[Receiver]:
    with receiver(lambda body: adapter.callback_ack()) as got:
        yield got


def debit(adapter: NetsUnionAdapter, url: str, agreement_no: str, fen: int = 10000,
          bank: str = "ICBC", ref: str | None = None) -> str:  # fmt: skip
    ref = ref or new_ref()
    request = OrderRequest(
        ref, Money(fen, "CNY"), "协议支付测试", url, "agreement",
        payer_bank=bank, agreement_no=agreement_no,
    )  # fmt: skip
    action = adapter.create_order(request)
    assert action.kind is PayerActionKind.WAIT
    return ref


def callbacks_of(adapter: NetsUnionAdapter, got: Receiver, ref: str) -> list[Callback]:
    parsed = [adapter.parse_callback(h, b) for h, b in list(got.received)]
    return [c for c in parsed if isinstance(c, Callback) and c.trade.payment_ref == ref]


def test_agreement_needs_the_right_sms_code(adapter: NetsUnionAdapter, http: httpx.Client) -> None:
    request = agreement_request("CCB")
    asked = adapter.request_agreement(request)
    assert asked.state is AgreementState.PENDING_CODE
    assert asked.bank == "CCB" and asked.masked_account is not None
    assert asked.masked_account.endswith(request.account_no[-4:]) and "*" in asked.masked_account
    again = adapter.request_agreement(request)  # idempotent: no second code
    assert again.state is AgreementState.PENDING_CODE
    assert len(http.get("/sandbox/sms", params={"mobile": request.mobile}).json()["sms"]) == 1
    code = sms_code(http, request.mobile)
    wrong = "000000" if code != "000000" else "111111"
    refused = adapter.confirm_agreement(request.agreement_ref, wrong)
    assert refused.state is AgreementState.PENDING_CODE and refused.code == "NU4021"
    signed = adapter.confirm_agreement(request.agreement_ref, code)
    assert signed.state is AgreementState.SIGNED and signed.agreement_no
    repeat = adapter.confirm_agreement(request.agreement_ref, code)
    assert repeat.agreement_no == signed.agreement_no
    asked_after = adapter.request_agreement(request)
    assert asked_after.state is AgreementState.SIGNED
    assert asked_after.agreement_no == signed.agreement_no


def test_too_many_wrong_codes_fail_the_agreement(
    adapter: NetsUnionAdapter, http: httpx.Client
) -> None:
    http.post("/sandbox/settings", json={"sms_max_attempts": 2})
    try:
        request = agreement_request("BOC")
        adapter.request_agreement(request)
        code = sms_code(http, request.mobile)
        wrong = "000000" if code != "000000" else "111111"
        assert adapter.confirm_agreement(request.agreement_ref, wrong).state is (
            AgreementState.PENDING_CODE
        )
        failed = adapter.confirm_agreement(request.agreement_ref, wrong)
        assert failed.state is AgreementState.FAILED and failed.code == "NU4023"
        late = adapter.confirm_agreement(request.agreement_ref, code)  # even the right one
        assert late.state is AgreementState.FAILED
    finally:
        http.post("/sandbox/settings", json={"sms_max_attempts": 5})


def test_the_bank_refuses_details_it_does_not_hold(adapter: NetsUnionAdapter) -> None:
    refused = adapter.request_agreement(agreement_request(account_no="6222000011110000"))
    assert refused.state is AgreementState.FAILED and refused.code == "NU4102"


def test_a_changed_agreement_request_is_refused(adapter: NetsUnionAdapter) -> None:
    request = agreement_request()
    adapter.request_agreement(request)
    changed = adapter.request_agreement(replace(request, mobile="13900000000"))
    assert changed.state is AgreementState.FAILED and changed.code == "NU4009"


def test_debit_is_notified_and_queried(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    agreement_no = sign_agreement(adapter, http)
    ref = debit(adapter, member.url, agreement_no, 12345)
    wait_until(lambda: bool(callbacks_of(adapter, member, ref)), timeout=15)
    [told] = callbacks_of(adapter, member, ref)
    assert told.trade.state is TradeState.SUCCESS
    assert told.trade.amount == Money(12345, "CNY")
    assert told.trade.merchant_id == adapter.account.merchant_id
    queried = adapter.query(ref)
    assert queried.state is TradeState.SUCCESS and queried.channel_trade_no == (
        told.trade.channel_trade_no
    )
    assert adapter.close(ref) is CloseOutcome.ALREADY_PAID
    # the same debit again: the same trade, nothing new
    assert debit(adapter, member.url, agreement_no, 12345, ref=ref) == ref
    orders = {o["out_trade_no"]: o for o in http.get("/sandbox/orders").json()["orders"]}
    assert orders[ref]["trade_state"] == "SUCCESS" and orders[ref]["total"] == 12345
    rows = http.get("/sandbox/notifications", params={"out_trade_no": ref}).json()
    assert [n["state"] for n in rows["notifications"]] == ["DELIVERED"]


def test_unknown_debit_is_not_found_and_closes(adapter: NetsUnionAdapter) -> None:
    ref = new_ref()
    assert adapter.query(ref).state is TradeState.NOT_FOUND
    assert adapter.close(ref) is CloseOutcome.CLOSED


def test_debit_needs_a_signed_agreement_at_its_bank(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    with pytest.raises(ChannelError) as refused:
        debit(adapter, member.url, "SGN00000000000000000000000000")
    assert refused.value.code == "NU4031" and not refused.value.retryable
    agreement_no = sign_agreement(adapter, http, "ICBC")
    with pytest.raises(ChannelError) as other_bank:
        debit(adapter, member.url, agreement_no, bank="CMB")
    assert other_bank.value.code == "NU4032"


def test_the_bank_decides_when_told_and_declines(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    http.post("/sandbox/settings", json={"debits_wait": True})
    agreement_no = sign_agreement(adapter, http)
    ref = debit(adapter, member.url, agreement_no)
    assert adapter.query(ref).state is TradeState.PENDING
    with pytest.raises(ChannelError) as busy:
        adapter.close(ref)
    assert busy.value.retryable
    decided = http.post("/sandbox/pay", json={"out_trade_no": ref, "outcome": "FAIL"})
    assert decided.status_code == 200 and decided.json()["order"]["trade_state"] == "FAILED"
    wait_until(lambda: bool(callbacks_of(adapter, member, ref)), timeout=15)
    assert callbacks_of(adapter, member, ref)[0].trade.state is TradeState.FAILED
    assert adapter.query(ref).state is TradeState.FAILED
    assert adapter.close(ref) is CloseOutcome.CLOSED


def test_refunds_are_asynchronous_and_bounded(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    agreement_no = sign_agreement(adapter, http)
    ref = debit(adapter, member.url, agreement_no, 10000)
    wait_until(lambda: adapter.query(ref).state is TradeState.SUCCESS, timeout=15)

    def ask(refund_ref: str, fen: int) -> RefundState | None:
        request = RefundRequest(
            refund_ref, ref, Money(fen, "CNY"), Money(10000, "CNY"), member.url, "退货"
        )
        return adapter.refund(request).state

    first = new_ref("RF")
    assert ask(first, 3000) is RefundState.PROCESSING
    assert ask(first, 3000) in (RefundState.PROCESSING, RefundState.SUCCESS)  # idempotent
    with pytest.raises(ChannelError) as too_much:
        ask(new_ref("RF"), 7001)
    assert too_much.value.code == "NU4051"
    wait_until(lambda: adapter.query_refund(first, ref).state is RefundState.SUCCESS, timeout=15)
    done = adapter.query_refund(first, ref)
    assert done.amount == Money(3000, "CNY") and done.payment_ref == ref

    def told() -> list[RefundCallback]:
        parsed = [adapter.parse_callback(h, b) for h, b in list(member.received)]
        return [c for c in parsed if isinstance(c, RefundCallback) and c.refund.refund_ref == first]

    wait_until(lambda: bool(told()), timeout=15)
    assert told()[0].refund.state is RefundState.SUCCESS
    refunds = {r["out_refund_no"]: r for r in http.get("/sandbox/refunds").json()["refunds"]}
    assert refunds[first]["status"] == "SUCCESS" and refunds[first]["out_trade_no"] == ref
    assert adapter.query_refund(new_ref("RF"), ref).state is RefundState.NOT_FOUND


def test_unacknowledged_notifications_are_retried(
    adapter: NetsUnionAdapter, http: httpx.Client
) -> None:
    answers = [adapter.callback_nack("busy"), adapter.callback_nack("busy")]

    def reply(_: bytes) -> CallbackReply:
        return answers.pop(0) if answers else adapter.callback_ack()

    with receiver(reply) as got:
        agreement_no = sign_agreement(adapter, http)
        ref = debit(adapter, got.url, agreement_no)
        received = got.wait_for(3, timeout=30)
    ids = {adapter.parse_callback(h, b).notify_id for h, b in received}
    assert len(ids) == 1  # the same notification each time
    rows = http.get("/sandbox/notifications", params={"out_trade_no": ref}).json()
    wait_until(
        lambda: (
            http.get("/sandbox/notifications", params={"out_trade_no": ref}).json()[
                "notifications"
            ][0]["state"]
            == "DELIVERED"
        ),
        timeout=10,
    )
    assert rows["notifications"][0]["attempts"] >= 2


def test_faults_for_one_bank_spare_the_others(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    icbc, cmb = sign_agreement(adapter, http, "ICBC"), sign_agreement(adapter, http, "CMB")
    set_ = http.post("/sandbox/faults", json={"bank": "ICBC", "error_rate": 1.0})
    assert set_.status_code == 200 and set_.json()["bank"] == "ICBC"
    with pytest.raises(ChannelError) as busy:
        debit(adapter, member.url, icbc)
    assert busy.value.code == wire.SYS_BUSY and busy.value.retryable
    debit(adapter, member.url, cmb, bank="CMB")  # another bank: untouched
    http.post("/sandbox/faults", json={"error_rate": 0.0, "decline_rate": 1.0})
    declined, fine = debit(adapter, member.url, icbc), debit(adapter, member.url, cmb, bank="CMB")
    wait_until(lambda: adapter.query(declined).state is TradeState.FAILED, timeout=15)
    wait_until(lambda: adapter.query(fine).state is TradeState.SUCCESS, timeout=15)
    http.post("/sandbox/faults", json={"decline_rate": 0.0, "drop_rate": 1.0})
    dropped, sent = debit(adapter, member.url, icbc), debit(adapter, member.url, cmb, bank="CMB")
    wait_until(lambda: bool(callbacks_of(adapter, member, sent)), timeout=15)
    wait_until(lambda: adapter.query(dropped).state is TradeState.SUCCESS, timeout=15)
    assert not callbacks_of(adapter, member, dropped)  # 补单 finds it by query only
    refused = http.post("/sandbox/faults", json={"bank": "NOBANK"})
    assert refused.status_code == 400


def test_duplicated_notifications_keep_their_id(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver
) -> None:
    http.post("/sandbox/faults", json={"duplicate_rate": 1.0})
    ref = debit(adapter, member.url, sign_agreement(adapter, http))
    wait_until(lambda: len(callbacks_of(adapter, member, ref)) == 2, timeout=15)
    assert len({c.notify_id for c in callbacks_of(adapter, member, ref)}) == 1


def test_clearing_files_per_batch_add_up(
    adapter: NetsUnionAdapter, http: httpx.Client, member: Receiver, tmp_path: Path
) -> None:
    agreement_no = sign_agreement(adapter, http)
    refs = [debit(adapter, member.url, agreement_no, 1000 + i) for i in range(3)]
    for ref in refs:
        wait_until(lambda r=ref: adapter.query(r).state is TradeState.SUCCESS, timeout=15)
    paid_at = adapter.query(refs[0]).paid_at
    assert paid_at is not None
    day = paid_at.date()
    closed = http.post("/sandbox/close-day", json={"date": day.isoformat()}).json()
    assert closed["bill_ready"] and len(closed["batches"]) == 4
    content = adapter.download_bill(day)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
    assert len(names) == 4 and all(n.startswith(adapter.account.merchant_id) for n in names)
    lines = adapter.parse_bill(content)
    mine = {line.payment_ref: line for line in lines if line.payment_ref in refs}
    assert {r: mine[r].amount.minor for r in refs} == {r: 1000 + i for i, r in enumerate(refs)}
    assert all(mine[r].kind == "PAYMENT" and mine[r].fee.minor >= 0 for r in refs)
    saved = tmp_path / "clearing.zip"  # and recon reads the same download
    saved.write_bytes(content)
    totals = import_bill(duckdb.connect(), saved, day, "bill")
    assert totals.lines == len(lines) and totals.payments >= 3


def test_clearing_files_are_not_out_before_the_day_ends(adapter: NetsUnionAdapter) -> None:
    with pytest.raises(ChannelError) as early:
        adapter.download_bill(date(2099, 1, 1))
    assert early.value.code == "BILL_NOT_READY" and early.value.retryable


def test_a_forged_request_is_refused(sandbox: SandboxProcess, adapter: NetsUnionAdapter) -> None:
    body = {"OriTrxInf": {"OriTrxId": "X1"}, "InstgInf": {"InstgId": adapter.account.merchant_id}}
    data = adapter._client.message(wire.QUERY, body)
    forged = data.replace(b"X1", b"X2")
    headers = wire.http_headers(wire.QUERY, adapter.account.merchant_id)
    with sandbox.http() as http:
        answer = http.post("/epcc/gateway", content=forged, headers=headers)
    parsed = wire.parse(answer.content)
    assert adapter._client.is_platforms(parsed)
    assert parsed.text("SysRtnInf/SysRtnCd") == wire.SYS_SIGNATURE
