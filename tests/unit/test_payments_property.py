"""Property-based: random sequences of merchant calls, payer actions, callbacks (duplicated,
late, reordered, forged, with a wrong amount or currency), 补单 queries, expiry and bus
redeliveries never break the money invariants, and paygrid ends in the state the channel holds.

The run must reach what it claims to test: every payment state and the redelivery of every
event kind, and every kind of wrong amount (the coverage assertion at the end of the run)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import replace
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
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update

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
from paygrid.ops.check import Violation, check_database
from paygrid.payments import checkout
from paygrid.payments.domain import PaymentStatus
from paygrid.payments.errors import PaymentRejected
from paygrid.payments.service import CreatePayment, PaymentService, Urls
from paygrid.platform.bootstrap import secret_lookup
from paygrid.storage.database import Database
from paygrid.storage.schema import inbox, ledger_vouchers, notifications, outbox, payments
from tests.unit.fake_channel import FakeChannel

SIGNED = {"x-fake-signature": "ok"}
EVENT_KINDS = frozenset(
    {"payment.created", "payment.succeeded", "payment.closed", "payment.failed"}
)
# How the channel may misreport what was paid; none of them may reach SUCCESS or the ledger.
MISREPORTS = ("over", "under", "currency")
PAY_OUTCOMES = st.sampled_from([TradeState.SUCCESS, TradeState.SUCCESS, TradeState.FAILED])
# The anomalies `paygrid check` must report for a misreported payment (and only for one).
REPORTED_ANOMALIES = frozenset({"CALLBACK_ANOMALY"})

# What the examples of one run reached: counted by the rules, asserted after the run.
REACHED: Counter[str] = Counter()


def misreport(amount: int, how: str | None) -> Money | None:
    if how == "over":
        return Money(amount + 1, "CNY")
    if how == "under":
        return Money(amount - 1, "CNY")
    if how == "currency":
        return Money(amount, "USD")
    return None


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
        self.consumers = {"ledger": LEDGER_EVENTS, "notify": NOTIFY_EVENTS}
        self.bus.subscribe("ledger", LEDGER_EVENTS, self.ledger)
        self.bus.subscribe("notify", NOTIFY_EVENTS, self.notify)
        self.relay = OutboxRelay(self.db, self.bus)
        self.mchid = create_merchant(self.db, vault, "prop", methods=("wechatpay",)).merchant.mchid
        self.counter = 0
        self.commands: dict[str, CreatePayment] = {}
        self.told_wrong: set[str] = set()  # misreported payments paygrid got a callback for

    def teardown(self) -> None:
        # Converge: 补单 for everything still open, drain the bus, then check strictly.
        self.service.recover_pending(timedelta(seconds=-1))
        for _ in range(5):
            self.relay.pump()
        self._every_event_delivered_twice()
        with self.db.transaction() as conn:
            rows = conn.execute(select(payments.c.payment_id, payments.c.status)).all()
            booked = set(conn.execute(select(ledger_vouchers.c.business_ref)).scalars())
        for row in rows:
            channel_state = self.channel.states.get(row.payment_id)
            if row.payment_id in self.channel.misreported:
                assert row.status != "SUCCESS" and row.payment_id not in booked, row
                continue
            if channel_state == TradeState.SUCCESS:
                assert row.status == "SUCCESS", (row, channel_state)
            if row.status == "SUCCESS":
                assert channel_state == TradeState.SUCCESS
        found = check_database(self.db, timedelta(0))
        self._only_misreports_reported(found)
        reported = {ref for ref in self.told_wrong if any(ref in v.detail for v in found)}
        assert reported == self.told_wrong, (found, self.told_wrong)  # each one is reported
        self.notify.close()
        self.db.dispose()
        self.tmp.cleanup()

    def _every_event_delivered_twice(self) -> None:
        """At least once means twice, too: every event once more to every consumer leaves one
        inbox row, one voucher and one notification per event."""
        with self.db.transaction() as conn:
            events = conn.execute(select(outbox).where(outbox.c.published_at.is_not(None))).all()
        for row in events:
            self.bus.publish(row_to_event(row))  # raises if a consumer fails on the repeat
        with self.db.transaction() as conn:
            inbox_rows = Counter(conn.execute(select(inbox.c.consumer, inbox.c.event_id)).all())
            notified = Counter(conn.execute(select(notifications.c.event_id)).scalars())
            vouchers = Counter(conn.execute(select(ledger_vouchers.c.business_ref)).scalars())
        for consumer, kinds in self.consumers.items():
            for row in events:
                if row.event_type in kinds:
                    assert inbox_rows[(consumer, row.event_id)] == 1, (consumer, row.event_id)
        succeeded = [r for r in events if r.event_type == "payment.succeeded"]
        assert all(notified[r.event_id] == 1 for r in succeeded), notified
        assert sum(notified.values()) == len(succeeded)
        assert all(vouchers[r.aggregate_id] == 1 for r in succeeded), vouchers
        assert sum(vouchers.values()) == len(succeeded)

    def _only_misreports_reported(self, found: list[Violation]) -> None:
        """A misreported payment is reported (CALLBACK_ANOMALY); nothing else may be."""
        for violation in found:
            assert violation.code in REPORTED_ANOMALIES, found
            assert any(ref in violation.detail for ref in self.channel.misreported), found

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
        self.commands[payment.payment_id] = cmd
        return payment.payment_id

    @rule(ref=refs, same_body=st.booleans())
    def merchant_repeats_create(self, ref: str, same_body: bool) -> None:
        """The same out_trade_no again: the same body is the same payment, another is refused."""
        cmd = self.commands[ref]
        again = cmd if same_body else replace(cmd, total=cmd.total + 1, fingerprint="other")
        try:
            payment, created = self.service.create(again)
        except PaymentRejected as exc:
            if same_body:  # the repeat may try the channel order again, and be refused there
                assert exc.code in ("PAYMENT_EXPIRED", "CHANNEL_ERROR"), exc.code
            else:
                assert exc.code == "DUPLICATE_OUT_TRADE_NO" and ref in exc.message, exc
            return
        assert same_body and not created and payment.payment_id == ref, (payment, created)

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
        checkout.record_intent(self.service.core, ref, "wechatpay", "native")
        self.channel.create_order(
            OrderRequest(
                payment_ref=ref,
                amount=Money(payment.amount, payment.currency),
                description="d",
                notify_url="http://api/callbacks/wechatpay",
                method="native",
            )
        )

    @rule(
        ref=refs,
        outcome=PAY_OUTCOMES,
        deliver=st.booleans(),
        how=st.sampled_from([None, None, *MISREPORTS]),
    )
    def payer_pays(self, ref: str, outcome: TradeState, deliver: bool, how: str | None) -> None:
        order = self.channel.orders.get(ref)
        paid = order is not None and outcome == TradeState.SUCCESS
        reported = misreport(order.amount.minor, how) if order and paid else None
        body = self.channel.pay(ref, outcome, reported)
        if body is not None and deliver:
            assert self.service.handle_callback("wechatpay", SIGNED, body).status == 204
            if reported is not None:
                self.told_wrong.add(ref)
                REACHED[f"misreport:{how}"] += 1

    @rule(
        target=refs,
        amount=st.integers(1, 10**9),
        outcome=PAY_OUTCOMES,
        deliver=st.booleans(),
        how=st.sampled_from([None, None, None, *MISREPORTS]),
    )
    def a_payer_pays_at_once(
        self, amount: int, outcome: TradeState, deliver: bool, how: str | None
    ) -> str:
        """The common path, made common: create with a channel order, the payer pays."""
        ref = self.create(amount, with_channel=True)
        self.payer_pays(ref, outcome, deliver, how)
        return ref

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
        """A crash between publish and mark-published: the same event goes out again. The
        kind is drawn first so that every kind is redelivered, not only the frequent ones."""
        self.relay.pump()
        with self.db.transaction() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.published_at.is_not(None))).all()
        if rows:
            kind = data.draw(st.sampled_from(sorted({r.event_type for r in rows})))
            row = data.draw(st.sampled_from([r for r in rows if r.event_type == kind]))
            self.bus.publish(row_to_event(row))
            REACHED[f"redelivered:{kind}"] += 1

    @rule()
    def relay_crashes_before_marking(self) -> None:
        """The relay published its batch and died before marking it: it all goes out again."""
        self.relay.pump()
        with self.db.transaction() as conn:
            rows = conn.execute(
                select(outbox).where(outbox.c.published_at.is_not(None)).order_by(outbox.c.seq)
            ).all()
        results = self.bus.publish_batch([row_to_event(row) for row in rows])  # as the relay
        assert all(r.ok for r in results), results  # a repeat is acknowledged, never a failure
        for row in rows:
            REACHED[f"redelivered:{row.event_type}"] += 1

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
        self._only_misreports_reported(check_database(self.db, timedelta(days=1)))

    @invariant()
    def closed_or_failed_leave_nothing_payable(self) -> None:
        """A payment paygrid calls closed or failed has no order a payer could still pay."""
        with self.db.transaction() as conn:
            rows = conn.execute(select(payments.c.payment_id, payments.c.status)).all()
        for row in rows:
            REACHED[f"state:{row.status}"] += 1
            if row.status in ("CLOSED", "FAILED"):
                assert not self.channel.payable(row.payment_id), row

    @invariant()
    def a_misreported_payment_never_succeeds(self) -> None:
        refs = list(self.channel.misreported)
        if not refs:
            return
        with self.db.transaction() as conn:
            paid = conn.execute(
                select(payments.c.payment_id).where(
                    payments.c.payment_id.in_(refs), payments.c.status == "SUCCESS"
                )
            ).all()
            booked = conn.execute(
                select(ledger_vouchers.c.business_ref).where(
                    ledger_vouchers.c.business_ref.in_(refs)
                )
            ).all()
        assert paid == [] and booked == [], (paid, booked, self.channel.misreported)

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


SETTINGS = settings(
    max_examples=120,  # with the rules above, enough to reach everything the end asserts
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),  # CI replays the same examples; locally, explore
)


def test_payment_lifecycle() -> None:
    """The state machine, then proof that its examples reached what the invariants are about."""
    REACHED.clear()
    run_state_machine_as_test(PaymentLifecycle, settings=SETTINGS)
    missing = [
        *(f"state:{s.value}" for s in PaymentStatus),
        *(f"redelivered:{kind}" for kind in sorted(EVENT_KINDS)),
        *(f"misreport:{how}" for how in MISREPORTS),
    ]
    assert [m for m in missing if REACHED[m] == 0] == [], dict(REACHED)


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
