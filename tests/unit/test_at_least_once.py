"""At-least-once delivery, in process: every event delivered twice to every consumer that the
composition root subscribes leaves one inbox row per consumer and event, one capture voucher
per payment and one notification per event, and the repeat is acknowledged (no failure).

The consumers are wired by :func:`paygrid.platform.bootstrap.bootstrap`, so a consumer added
there is covered here without editing this test. (JetStream and a killed consumer process:
tests/integration/test_consumer_killed_before_ack.py.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from paygrid.bus.inbox import first_delivery
from paygrid.bus.inprocess import InProcessBus
from paygrid.bus.ports import BatchHandler
from paygrid.bus.relay import row_to_event
from paygrid.channels.ports import TradeState
from paygrid.config import Settings
from paygrid.kernel.clock import utcnow
from paygrid.merchants.service import create_merchant
from paygrid.payments.service import CreatePayment
from paygrid.platform.bootstrap import Platform, bootstrap
from paygrid.storage.database import Database
from paygrid.storage.schema import inbox, ledger_vouchers, notifications, outbox
from tests.unit.fake_channel import FakeChannel

SIGNED = {"x-fake-signature": "ok"}


class RecordingBus(InProcessBus):
    """The in-process bus, remembering who subscribed to what."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: dict[str, frozenset[str]] = {}
        self.handlers: dict[str, BatchHandler] = {}

    def subscribe(self, consumer: str, event_types: frozenset[str], handler: BatchHandler) -> None:
        self.subscriptions[consumer] = event_types
        self.handlers[consumer] = handler
        super().subscribe(consumer, event_types, handler)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Platform, RecordingBus, FakeChannel]]:
    bus, channel = RecordingBus(), FakeChannel()
    settings = Settings(data_dir=tmp_path / "var", run_sandboxes=False)
    running = bootstrap(settings, channels={"wechatpay": channel}, bus=bus)
    yield running, bus, channel
    running.close()


def test_first_delivery_is_true_once_per_consumer_and_event(tmp_path: Path) -> None:
    """The inbox itself: a repeat is told apart from a first delivery (unique constraints on
    the effects must not be what stops a double effect)."""
    db = Database(f"sqlite:///{tmp_path / 'inbox.db'}")
    db.migrate()
    with db.transaction() as conn:
        assert first_delivery(conn, "ledger", "evt_1")
        assert not first_delivery(conn, "ledger", "evt_1")
        assert first_delivery(conn, "notify", "evt_1")  # each consumer has its own record
        assert first_delivery(conn, "ledger", "evt_2")
    with db.transaction() as conn:  # committed: still a repeat in a later transaction
        assert not first_delivery(conn, "ledger", "evt_1")
        rows = conn.execute(select(inbox.c.consumer, inbox.c.event_id)).all()
    assert sorted(rows) == [("ledger", "evt_1"), ("ledger", "evt_2"), ("notify", "evt_1")]
    db.dispose()


def _pay(running: Platform, channel: FakeChannel, mchid: str, n: int, outcome: str) -> str:
    payment, _ = running.payments.create(
        CreatePayment(
            mchid=mchid,
            out_trade_no=f"twice-{n}",
            total=1000 + n,
            currency="CNY",
            description="d",
            notify_url="http://127.0.0.1:9/n",
            return_url=None,
            channel="wechatpay",
            method="native",
            expire_at=utcnow() + timedelta(hours=1),
            attach=None,
            items=(),
            discounts=(),
            fingerprint=f"f{n}",
        )
    )
    ref = payment.payment_id
    if outcome == "close":
        running.payments.close(ref, mchid)
    elif outcome == "callback":  # paid, told by the channel's callback
        body = channel.pay(ref)
        assert body is not None
        assert running.payments.handle_callback("wechatpay", SIGNED, body).status == 204
    elif outcome == "query":  # paid, the callback lost: 补单 finds it
        channel.pay(ref)
        running.payments.recover_pending(timedelta(seconds=-1))
    elif outcome == "fail":
        body = channel.pay(ref, TradeState.FAILED)
        assert body is not None
        running.payments.handle_callback("wechatpay", SIGNED, body)
    return ref


def test_every_event_delivered_twice_to_every_consumer(
    platform: tuple[Platform, RecordingBus, FakeChannel],
) -> None:
    running, bus, channel = platform
    mchid = create_merchant(
        running.db, running.vault, "twice", methods=("wechatpay",)
    ).merchant.mchid
    outcomes = ["callback", "query", "callback", "fail", "close", "open"]
    refs = [_pay(running, channel, mchid, n, o) for n, o in enumerate(outcomes)]
    assert running.relay.pump() > 0  # the first delivery
    with running.db.read() as conn:
        events = conn.execute(select(outbox).order_by(outbox.c.seq)).all()
    assert all(row.published_at is not None for row in events)
    assert {"ledger", "notify"} <= set(bus.subscriptions)

    for row in events:  # the second delivery of every event, to every subscriber
        bus.publish(row_to_event(row))  # raises DeliveryFailed if any consumer fails on it

    with running.db.read() as conn:
        inbox_rows = Counter(conn.execute(select(inbox.c.consumer, inbox.c.event_id)).all())
        notified = Counter(conn.execute(select(notifications.c.event_id)).scalars())
        vouchers = Counter(conn.execute(select(ledger_vouchers.c.business_ref)).scalars())
    expected_inbox = Counter(
        (consumer, row.event_id)
        for consumer, kinds in bus.subscriptions.items()
        for row in events
        if row.event_type in kinds
    )
    assert inbox_rows == expected_inbox  # one row per consumer and event, none elsewhere
    succeeded = [row for row in events if row.event_type == "payment.succeeded"]
    assert sorted(row.aggregate_id for row in succeeded) == sorted(refs[:3])
    assert notified == Counter(row.event_id for row in succeeded)  # one notification each
    assert vouchers == Counter(row.aggregate_id for row in succeeded)  # one voucher each


def test_a_consumer_redelivered_alone_is_acknowledged_and_changes_nothing(
    platform: tuple[Platform, RecordingBus, FakeChannel],
) -> None:
    """Each consumer on its own, its handler called again with the same event (JetStream
    redelivers per consumer): it returns normally, and nothing is added."""
    running, bus, channel = platform
    mchid = create_merchant(
        running.db, running.vault, "alone", methods=("wechatpay",)
    ).merchant.mchid
    _pay(running, channel, mchid, 1, "callback")
    running.relay.pump()
    with running.db.read() as conn:
        [row] = conn.execute(select(outbox).where(outbox.c.event_type == "payment.succeeded"))
    event = row_to_event(row)

    def tables() -> tuple[int, int, int]:
        with running.db.read() as conn:
            return (
                len(conn.execute(select(inbox)).all()),
                len(conn.execute(select(notifications)).all()),
                len(conn.execute(select(ledger_vouchers)).all()),
            )

    before = tables()
    assert before == (2, 1, 1)
    for consumer, handler in bus.handlers.items():
        handler([event])  # must not raise: the repeat is acknowledged, not retried
        assert tables() == before, consumer


def test_a_second_event_for_the_same_success_books_nothing(
    platform: tuple[Platform, RecordingBus, FakeChannel],
) -> None:
    """Another event id announcing the same success (an outbox row copied by hand, a replayed
    backup): the inbox lets it through, the ledger still books one capture per payment."""
    running, bus, channel = platform
    mchid = create_merchant(
        running.db, running.vault, "twin", methods=("wechatpay",)
    ).merchant.mchid
    ref = _pay(running, channel, mchid, 1, "callback")
    running.relay.pump()
    with running.db.read() as conn:
        [row] = conn.execute(select(outbox).where(outbox.c.event_type == "payment.succeeded"))
    twin = replace(row_to_event(row), event_id="evt_twin")
    bus.handlers["ledger"]([twin])
    with running.db.read() as conn:
        vouchers = conn.execute(select(ledger_vouchers.c.kind, ledger_vouchers.c.business_ref))
        assert vouchers.all() == [("capture", ref)]
        seen = conn.execute(select(inbox.c.event_id).where(inbox.c.consumer == "ledger"))
        assert sorted(seen.scalars()) == sorted([row.event_id, "evt_twin"])
