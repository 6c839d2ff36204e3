"""Property-based: random sequences of merchant calls, payer actions, callbacks (duplicated,
late, reordered, forged), 补单 queries, expiry and bus redeliveries never break the money
invariants, and paygrid ends in the state the channel holds."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import func, select, update

from paygrid.bootstrap import secret_lookup
from paygrid.bus.inprocess import InProcessBus
from paygrid.bus.relay import OutboxRelay, row_to_event
from paygrid.channels.ports import OrderRequest, TradeState
from paygrid.kernel.clock import utcnow
from paygrid.kernel.money import Money
from paygrid.ledger.handlers import EVENT_TYPES as LEDGER_EVENTS
from paygrid.ledger.handlers import FeeRates, LedgerConsumer
from paygrid.merchants import repository as merchant_repo
from paygrid.merchants.service import create_merchant
from paygrid.merchants.vault import KEK_BYTES, Vault
from paygrid.notify.service import EVENT_TYPES as NOTIFY_EVENTS
from paygrid.notify.service import NotifyService
from paygrid.ops.check import check_database
from paygrid.payments.domain import PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import CreatePayment, PaymentService, Urls
from paygrid.storage.database import Database
from paygrid.storage.schema import ledger_vouchers, outbox, payments
from tests.unit.fake_channel import FakeChannel

SIGNED = {"x-fake-signature": "ok"}


class PaymentLifecycle(RuleBasedStateMachine):
    refs = Bundle("refs")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.db = Database(f"sqlite:///{Path(self.tmp.name) / 't.db'}")
        self.db.migrate()
        self.channel = FakeChannel()
        self.service = PaymentService(
            self.db, {"wechatpay": self.channel}, Urls("http://cashier", "http://api")
        )
        self.bus = InProcessBus()
        rates = FeeRates(
            lambda conn, m: merchant_repo.get(conn, m).fee_rate_ppm,  # type: ignore[union-attr]
            lambda ch: 2000,
        )
        self.ledger = LedgerConsumer(self.db, rates, "Asia/Shanghai")
        vault = Vault(os.urandom(KEK_BYTES))
        self.notify = NotifyService(self.db, secret_lookup(vault))
        self.bus.subscribe("ledger", LEDGER_EVENTS, self.ledger)
        self.bus.subscribe("notify", NOTIFY_EVENTS, self.notify)
        self.relay = OutboxRelay(self.db, self.bus)
        self.mchid = create_merchant(self.db, vault, "prop").merchant.mchid
        self.counter = 0

    def teardown(self) -> None:
        # Converge: 补单 for everything still open, drain the bus, then check strictly.
        self.service.recover_pending(timedelta(seconds=-1))
        for _ in range(5):
            self.relay.pump()
        with self.db.transaction() as conn:
            rows = conn.execute(select(payments.c.payment_id, payments.c.status)).all()
        for row in rows:
            channel_state = self.channel.states.get(row.payment_id)
            if channel_state == TradeState.SUCCESS:
                assert row.status == "SUCCESS", (row, channel_state)
            if row.status == "SUCCESS":
                assert channel_state == TradeState.SUCCESS
        assert check_database(self.db, timedelta(0)) == []
        self.notify.close()
        self.db.dispose()
        self.tmp.cleanup()

    @rule(target=refs, amount=st.integers(1, 10**9), with_channel=st.booleans())
    def create(self, amount: int, with_channel: bool) -> str:
        self.counter += 1
        cmd = CreatePayment(
            mchid=self.mchid,
            out_trade_no=f"o{self.counter}",
            total=amount,
            currency="CNY",
            description="d",
            notify_url="http://127.0.0.1:9/n",
            return_url=None,
            channel="wechatpay" if with_channel else None,
            method="native" if with_channel else "cashier",
            expire_at=utcnow() + timedelta(hours=1),
            attach=None,
            items=(),
            discounts=(),
            fingerprint=f"f{self.counter}",
        )
        payment, created = self.service.create(cmd)
        assert created
        return payment.payment_id

    @rule(ref=refs)
    def payer_opens_cashier(self, ref: str) -> None:
        try:
            self.service.start_channel_payment(ref, "wechatpay", "native")
        except PaymentRejected as exc:
            assert exc.code in (
                "PAYMENT_ALREADY_PAID",
                "PAYMENT_CLOSED",
                "PAYMENT_FAILED",
                "CHANNEL_ERROR",
            ), exc.code

    @rule(ref=refs)
    def crash_after_channel_took_the_order(self, ref: str) -> None:
        """The process dies after the channel accepted the order, before PAYING committed."""
        payment = self.service.get(ref)
        if payment.status != PaymentStatus.CREATED or payment.is_expired(utcnow()):
            return
        if self.channel.states.get(ref, TradeState.PENDING) != TradeState.PENDING:
            return  # the channel would refuse a final order; nothing new to crash on
        self.service._record_channel_intent(ref, "wechatpay", "native")
        self.channel.create_order(
            OrderRequest(
                payment_ref=ref,
                amount=Money(payment.amount, payment.currency),
                description="d",
                notify_url="http://api/callbacks/wechatpay",
                method="native",
            )
        )

    @rule(ref=refs, success=st.booleans(), deliver=st.booleans())
    def payer_pays(self, ref: str, success: bool, deliver: bool) -> None:
        body = self.channel.pay(ref, TradeState.SUCCESS if success else TradeState.FAILED)
        if body is not None and deliver:
            assert self.service.handle_callback("wechatpay", SIGNED, body).status == 204

    @precondition(lambda self: bool(self.channel.sent))
    @rule(index=st.integers(min_value=0))
    def redeliver_old_callback(self, index: int) -> None:
        body = self.channel.sent[index % len(self.channel.sent)]
        self.service.handle_callback("wechatpay", SIGNED, body)

    @precondition(lambda self: bool(self.channel.sent))
    @rule(index=st.integers(min_value=0))
    def forged_callback_changes_nothing(self, index: int) -> None:
        body = self.channel.sent[index % len(self.channel.sent)]
        before = self._snapshot()
        reply = self.service.handle_callback("wechatpay", {"x-fake-signature": "no"}, body)
        assert reply.status >= 400
        assert self._snapshot() == before

    @rule(ref=refs)
    def merchant_closes(self, ref: str) -> None:
        try:
            self.service.close(ref, self.mchid)
        except PaymentRejected as exc:
            assert exc.code in ("PAYMENT_ALREADY_PAID", "PAYMENT_FAILED"), exc.code

    @rule()
    def recovery_query(self) -> None:
        self.service.recover_pending(timedelta(seconds=-1))

    @rule()
    def relay_pumps(self) -> None:
        self.relay.pump()

    @rule(data=st.data())
    def bus_redelivers(self, data: st.DataObject) -> None:
        """A crash between publish and mark-published: the same event goes out again."""
        with self.db.transaction() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.published_at.is_not(None))).all()
        if rows:
            row = data.draw(st.sampled_from(rows))
            self.bus.publish(row_to_event(row))

    @rule(ref=refs)
    def expire(self, ref: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                update(payments)
                .where(payments.c.payment_id == ref)
                .values(expire_at=utcnow() - timedelta(seconds=1))
            )
        self.service.expire_due()

    @invariant()
    def at_most_one_capture_per_payment(self) -> None:
        with self.db.transaction() as conn:
            dup = conn.execute(
                select(ledger_vouchers.c.business_ref, func.count())
                .group_by(ledger_vouchers.c.business_ref)
                .having(func.count() > 1)
            ).all()
        assert dup == []

    @invariant()
    def no_violation_but_in_flight(self) -> None:
        found = check_database(self.db, timedelta(days=1))
        assert found == [], found

    def _snapshot(self) -> list[tuple[str, str, int]]:
        with self.db.transaction() as conn:
            return [
                (r.payment_id, r.status, r.version)
                for r in conn.execute(
                    select(payments.c.payment_id, payments.c.status, payments.c.version).order_by(
                        payments.c.payment_id
                    )
                )
            ]


TestPaymentLifecycle = PaymentLifecycle.TestCase
TestPaymentLifecycle.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),  # CI replays the same examples; locally, explore
)


def test_status_enum_covers_table() -> None:
    assert set(PaymentStatus) == {"CREATED", "PAYING", "SUCCESS", "FAILED", "CLOSED"}


def test_crash_after_channel_took_the_order_is_recovered_and_expired() -> None:
    """The channel is written down before it is called: 补单 and expiry find the order."""
    machine = PaymentLifecycle()
    try:
        paid = machine.create(amount=500, with_channel=False)
        machine.crash_after_channel_took_the_order(paid)
        assert machine.service.get(paid).status == PaymentStatus.CREATED
        machine.channel.pay(paid)  # the payer pays; the callback is lost
        machine.service.recover_pending(timedelta(seconds=-1))
        assert machine.service.get(paid).status == PaymentStatus.SUCCESS

        unpaid = machine.create(amount=700, with_channel=False)
        machine.crash_after_channel_took_the_order(unpaid)
        machine.expire(unpaid)
        assert machine.service.get(unpaid).status == PaymentStatus.CLOSED
        assert machine.channel.states[unpaid] == TradeState.CLOSED
    finally:
        machine.teardown()
