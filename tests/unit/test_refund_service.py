"""Refunds through the payment core's facade over SQLite, with the in-memory channel and the
consumers wired by the composition root: the reservation before the channel call, the
channel's answer, callbacks (deduplicated, anomalies refused and reported), 补单 (a refund the
channel never received is sent again), the refund voucher with the fee returned pro rata, the
notifications, and `paygrid check` on all of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from paygrid.bus.relay import row_to_event
from paygrid.channels.ports import ChannelError, RefundState
from paygrid.config import Settings
from paygrid.kernel.clock import utcnow
from paygrid.ledger.handlers import CaptureNotBooked
from paygrid.merchants.service import create_merchant
from paygrid.ops.check import check_database
from paygrid.payments.domain import Item
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.refunds import RefundItem, RefundOutcome
from paygrid.payments.service import CreatePayment, RequestRefund
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.storage.schema import (
    inbox,
    ledger_entries,
    ledger_vouchers,
    notifications,
    outbox,
    payments,
    refund_callbacks,
)
from tests.unit.fake_channel import FakeChannel
from tests.unit.test_at_least_once import RecordingBus

SIGNED = {"x-fake-signature": "ok"}
ALL = timedelta(0)  # every check, no grace


class Refunds:
    def __init__(self, running: Platform, channel: FakeChannel) -> None:
        self.running, self.channel = running, channel
        self.payments = running.payments
        self.mchid = create_merchant(
            running.db, running.vault, "r", methods=("wechatpay",)
        ).merchant.mchid
        self.count = 0

    def paid(self, total: int = 10_000, items: tuple[Item, ...] = ()) -> str:
        self.count += 1
        payment, _ = self.payments.create(
            CreatePayment(
                mchid=self.mchid,
                out_trade_no=f"o{self.count}",
                total=total,
                currency="CNY",
                description="d",
                notify_url="http://127.0.0.1:9/pay",
                return_url=None,
                channel="wechatpay",
                method="native",
                expire_at=utcnow() + timedelta(hours=1),
                attach=None,
                items=items,
                discounts=(),
                fingerprint=f"f{self.count}",
            )
        )
        body = self.channel.pay(payment.payment_id)
        assert body is not None
        assert self.payments.handle_callback("wechatpay", SIGNED, body).status == 204
        return payment.payment_id

    def refund(self, payment_id: str, amount: int, no: str, **more: object) -> dict[str, object]:
        cmd = RequestRefund(self.mchid, payment_id, None, no, amount, **more)  # type: ignore[arg-type]
        view, _ = self.payments.request_refund(cmd)
        return view.resource()

    def callback(self, body: bytes) -> int:
        return self.payments.handle_callback("wechatpay", SIGNED, body).status

    def payment(self, payment_id: str) -> dict[str, object]:
        return self.payments.resource(self.payments.get(payment_id))

    def codes(self, grace: timedelta = ALL) -> list[str]:
        self.running.relay.pump()
        return [v.code for v in check_database(self.running.db, grace)]


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Refunds]:
    channel = FakeChannel()
    settings = Settings(data_dir=tmp_path / "var", run_sandboxes=False)
    running = bootstrap(settings, channels={"wechatpay": channel}, bus=RecordingBus())
    yield Refunds(running, channel)
    running.close()


def test_partial_refunds_up_to_the_amount_with_vouchers_and_notifications(r: Refunds) -> None:
    pay = r.paid(10_000)
    first = r.refund(pay, 3_000, "rf-1", reason="缺货", notify_url="http://127.0.0.1:9/rf")
    assert (
        first["status"] == "PROCESSING" and first["channel_refund_no"] == f"wxr{first['refund_id']}"
    )
    assert r.payment(pay)["refunded_amount"] == 0
    assert r.codes(timedelta(hours=1)) == []  # in flight: reserved, not refunded
    assert r.codes() == ["REFUND_PROCESSING"]  # ...unless it stays so past the grace period
    assert r.callback(r.channel.settle_refund(str(first["refund_id"]))) == 204
    second = r.refund(pay, 7_000, "rf-2")
    with pytest.raises(PaymentRejected) as refused:
        r.refund(pay, 1, "rf-3")
    assert refused.value.code == "REFUND_EXCEEDS_REMAINING"
    assert r.callback(r.channel.settle_refund(str(second["refund_id"]))) == 204
    shown = r.payment(pay)
    assert shown["refunded_amount"] == 10_000
    assert [(x["out_refund_no"], x["status"]) for x in shown["refunds"]] == [  # type: ignore[attr-defined]
        ("rf-1", "SUCCESS"),
        ("rf-2", "SUCCESS"),
    ]
    assert r.codes() == []
    with r.running.db.read() as conn:
        fees = conn.execute(
            select(ledger_vouchers.c.kind, ledger_entries.c.amount)
            .join(ledger_entries, ledger_entries.c.voucher_id == ledger_vouchers.c.voucher_id)
            .where(ledger_entries.c.account_code == "fee_income:CNY")
            .order_by(ledger_vouchers.c.created_at)
        ).all()
        told = conn.execute(
            select(notifications.c.event_type, notifications.c.url, notifications.c.body)
        ).all()
    # the demo fee rate of a new merchant is 0.60 %: 60 fen, returned 18 then 42
    assert fees == [("capture", 60), ("refund", 18), ("refund", 42)]
    kinds = [(t, u) for t, u, _ in told]
    assert kinds == [
        ("payment.succeeded", "http://127.0.0.1:9/pay"),
        ("refund.succeeded", "http://127.0.0.1:9/rf"),  # the refund's own notify_url
        ("refund.succeeded", "http://127.0.0.1:9/pay"),  # else the payment's
    ]
    data = json.loads(told[1][2])["data"]
    assert data == r.payments.get_refund(str(first["refund_id"])).resource()
    assert data["status"] == "SUCCESS" and data["reason"] == "缺货"


def test_a_repeat_is_the_same_refund_and_another_body_is_refused(r: Refunds) -> None:
    pay = r.paid(500, items=(Item("A", "a", 2, 250),))
    first = r.refund(pay, 250, "same", items=(RefundItem("A", 1),))
    assert r.refund(pay, 250, "same", items=(RefundItem("A", 1),)) == first
    by_no = RequestRefund(r.mchid, None, "o1", "same", 250, items=(RefundItem("A", 1),))
    assert r.payments.request_refund(by_no) == (
        r.payments.get_refund(str(first["refund_id"])),
        False,
    )
    for other in ({"amount": 251}, {"reason": "x"}, {"items": ()}):
        with pytest.raises(PaymentRejected) as refused:
            r.refund(pay, **{"amount": 250, "no": "same", "items": (RefundItem("A", 1),), **other})  # type: ignore[arg-type]
        assert refused.value.code == "DUPLICATE_OUT_REFUND_NO"
    assert r.channel.refund_calls == 1
    for items, code in (
        ((RefundItem("B", 1),), "INVALID_ITEMS"),
        ((RefundItem("A", 3),), "INVALID_ITEMS"),
    ):
        with pytest.raises(PaymentRejected) as refused:
            r.refund(pay, 1, "it", items=items)
        assert refused.value.code == code


def test_refusals_before_the_channel_is_called(r: Refunds) -> None:
    pay = r.paid(900)
    unpaid, _ = r.payments.create(
        CreatePayment(
            r.mchid, "unpaid", 900, "CNY", "d", "http://127.0.0.1:9/n", None, None, "cashier",
            utcnow() + timedelta(hours=1), None, (), (), "fu",
        )
    )  # fmt: skip
    cases = [
        (unpaid.payment_id, 900, "PAYMENT_NOT_REFUNDABLE"),
        (pay, 901, "REFUND_EXCEEDS_REMAINING"),
    ]
    for payment_id, amount, code in cases:
        with pytest.raises(PaymentRejected) as refused:
            r.refund(payment_id, amount, f"n-{code}")
        assert refused.value.code == code
    with r.running.db.transaction() as conn:  # paid 366 days ago: past WeChat's year
        conn.execute(
            update(payments)
            .where(payments.c.payment_id == pay)
            .values(paid_at=utcnow() - timedelta(days=366))
        )
    with pytest.raises(PaymentRejected) as refused:
        r.refund(pay, 1, "late")
    assert refused.value.code == "REFUND_WINDOW_CLOSED"
    other = create_merchant(
        r.running.db, r.running.vault, "other", methods=("wechatpay",)
    ).merchant.mchid
    with pytest.raises(PaymentRejected) as refused:
        r.payments.request_refund(RequestRefund(other, pay, None, "x", 1))
    assert refused.value.code == "PAYMENT_NOT_FOUND"
    assert r.channel.refund_calls == 0


def test_a_final_refusal_fails_the_refund_and_releases_the_amount(r: Refunds) -> None:
    pay = r.paid(800)
    r.channel.refund_errors.append(ChannelError("NO_AUTH", "no refund permission"))
    failed = r.refund(pay, 800, "refused")
    assert (failed["status"], failed["channel_status"]) == ("FAILED", "NO_AUTH")
    assert r.payments.get(pay).refundable_amount == 800
    again = r.refund(pay, 800, "again")
    assert again["status"] == "PROCESSING"
    assert r.codes(timedelta(hours=1)) == []
    with r.running.db.read() as conn:
        types = conn.execute(select(outbox.c.event_type).order_by(outbox.c.seq)).scalars().all()
    assert types[-1] == "refund.failed"


def test_retryable_trouble_leaves_it_to_recovery_which_sends_it_again(r: Refunds) -> None:
    pay = r.paid(800)
    r.channel.refund_errors.append(ChannelError("SYSTEM_ERROR", "busy", retryable=True))
    pending = r.refund(pay, 300, "later")
    refund_id = str(pending["refund_id"])
    assert pending["status"] == "PROCESSING" and refund_id not in r.channel.refunds
    assert r.payments.get(pay).refundable_amount == 500  # still reserved
    assert r.payments.recover_refunds(timedelta(seconds=30)) == 0  # too young to ask about
    assert r.payments.recover_refunds(timedelta(0)) == 0  # not found: sent again, processing
    assert r.channel.refund_states[refund_id] == RefundState.PROCESSING
    r.channel.settle_refund(refund_id)  # its callback is lost
    assert r.payments.recover_refunds(timedelta(0)) == 1
    assert r.payments.get_refund(refund_id).status == "SUCCESS"
    assert r.payments.get(pay).refunded_amount == 300
    assert r.codes() == []


def test_closed_at_the_channel_releases_the_amount(r: Refunds) -> None:
    pay = r.paid(600)
    refund_id = str(r.refund(pay, 600, "closing")["refund_id"])
    assert r.callback(r.channel.settle_refund(refund_id, RefundState.FAILED)) == 204
    assert r.payments.get_refund(refund_id).status == "FAILED"
    assert r.payments.get(pay).refundable_amount == 600
    assert r.codes() == []


def test_callbacks_are_deduplicated_and_anomalies_refused_and_reported(r: Refunds) -> None:
    pay = r.paid(1_000)
    refund_id = str(r.refund(pay, 400, "a")["refund_id"])
    wrong = r.channel.settle_refund(refund_id, amount=401)
    assert r.callback(wrong) == 204  # acknowledged, refused, recorded
    assert r.payments.get_refund(refund_id).status == "PROCESSING"
    body = r.channel.settle_refund(refund_id)
    assert r.callback(body) == 204
    assert r.callback(body) == 204  # the same notify id again
    unknown = json.dumps({"id": "n9", "refund_ref": "rfd_unknown", "state": "SUCCESS"})
    r.channel.refunds["rfd_unknown"] = r.channel.refunds[refund_id]
    r.channel.refund_states["rfd_unknown"] = RefundState.SUCCESS
    assert r.callback(unknown.encode()) == 400  # a refund we do not hold: nack
    with r.running.db.read() as conn:
        rows = conn.execute(
            select(refund_callbacks.c.outcome).order_by(refund_callbacks.c.received_at)
        ).scalars()
        assert list(rows) == ["AMOUNT_MISMATCH", "APPLY_SUCCESS"]
    assert r.payments.get(pay).refunded_amount == 400
    assert r.codes() == ["REFUND_CALLBACK_ANOMALY"]
    late_close = r.channel.settle_refund(refund_id, RefundState.FAILED)
    assert r.callback(late_close) == 204
    assert r.codes() == ["REFUND_CALLBACK_ANOMALY", "REFUND_CALLBACK_ANOMALY"]
    outcome = r.payments.apply_refund_trade(
        "wechatpay", refund_id, r.channel.query_refund(refund_id, pay), "refund_recovery"
    )
    assert outcome == RefundOutcome.ILLEGAL_TRANSITION  # the channel now says closed
    assert r.payments.get(pay).refunded_amount == 400


def test_check_notices_a_refund_without_its_voucher_and_a_counter_out_of_step(
    r: Refunds,
) -> None:
    pay = r.paid(1_000)
    refund_id = str(r.refund(pay, 1_000, "whole")["refund_id"])
    r.callback(r.channel.settle_refund(refund_id))
    assert r.codes() == []
    with r.running.db.transaction() as conn:
        conn.execute(update(payments).values(refunded_amount=999))
        voucher = conn.execute(
            select(ledger_vouchers.c.voucher_id).where(ledger_vouchers.c.kind == "refund")
        ).scalar_one()
        conn.execute(ledger_entries.delete().where(ledger_entries.c.voucher_id == voucher))
        conn.execute(ledger_vouchers.delete().where(ledger_vouchers.c.voucher_id == voucher))
    assert sorted(set(r.codes())) == [
        "BALANCE_MISMATCH",  # the totals still count the deleted entries
        "REFUNDED_AMOUNT_MISMATCH",
        "REFUND_VOUCHER_MISSING",
    ]


def test_the_ledger_books_a_refund_once_and_only_after_its_capture(r: Refunds) -> None:
    """A refund event delivered before its payment's capture is refused (the bus delivers it
    again) and leaves no inbox row; delivered twice after, it is booked once."""
    pay = r.paid(2_000)
    refund_id = str(r.refund(pay, 500, "early")["refund_id"])
    r.callback(r.channel.settle_refund(refund_id))
    with r.running.db.read() as conn:
        rows = {row.event_type: row for row in conn.execute(select(outbox))}
    refunded, captured = row_to_event(rows["refund.succeeded"]), rows["payment.succeeded"]
    ledger = r.running.bus.handlers["ledger"]  # type: ignore[attr-defined]
    with pytest.raises(CaptureNotBooked):
        ledger([refunded])
    with r.running.db.read() as conn:
        assert conn.execute(select(inbox).where(inbox.c.consumer == "ledger")).all() == []
        assert conn.execute(select(ledger_vouchers)).all() == []
    ledger([row_to_event(captured)])
    ledger([refunded])
    ledger([refunded])  # at least once: the repeat books nothing
    with r.running.db.read() as conn:
        kinds = conn.execute(select(ledger_vouchers.c.kind, ledger_vouchers.c.business_ref))
        assert sorted(kinds.all()) == [("capture", pay), ("refund", refund_id)]
    assert r.codes() == []  # the relay's own delivery changes nothing either
