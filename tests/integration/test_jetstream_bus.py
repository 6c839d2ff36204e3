"""The JetStream adapter against a real nats-server: at-least-once with dedup, redelivery,
dead letters, and nothing lost while the server is down."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from paygrid.bus import jetstream
from paygrid.bus.jetstream import JetStreamBus
from paygrid.bus.ports import BusUnavailable, Event
from paygrid.kernel.clock import utcnow
from tests.events import Numbered
from tests.support import NatsServer, nats_server, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as server:
        yield server


def event(event_type: str = "payment.succeeded", aggregate: str = "pay_1") -> Event:
    return Event("evt_" + uuid.uuid4().hex, event_type, aggregate, utcnow(), {"n": 1})


class Recorder:
    def __init__(self, fail_times: int = 0) -> None:
        self.seen: list[Event] = []
        self.calls = 0
        self.fail_times = fail_times
        self.lock = threading.Lock()

    def __call__(self, events: Sequence[Event]) -> None:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_times:
                raise RuntimeError(f"boom {self.calls}")
            self.seen.extend(events)


def test_publish_consume_and_dedup(nats: NatsServer) -> None:
    bus = JetStreamBus(nats.url)
    bus.connect()
    ledger, other = Recorder(), Recorder()
    bus.subscribe("ledger", frozenset({"payment.succeeded"}), ledger)
    bus.subscribe("other", frozenset({"payment.closed"}), other)
    bus.start_consumers()
    e = event()
    bus.publish(e)
    bus.publish(e)  # a relay that crashed before marking it published sends it again
    bus.publish(event("payment.closed"))
    wait_until(lambda: len(ledger.seen) == 1 and len(other.seen) == 1)
    time.sleep(0.5)
    assert [x.event_id for x in ledger.seen] == [e.event_id]
    assert ledger.seen[0].payload == {"n": 1}
    assert bus.counters.duplicates == 1
    wait_until(lambda: bus.consumer_lag() == {"ledger": 0, "other": 0})
    bus.close()


def test_failing_consumer_is_redelivered_then_dead_lettered(
    nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jetstream, "NAK_BACKOFF_S", (0.05,) * 10)
    monkeypatch.setattr(jetstream, "MAX_DELIVER", 4)
    bus = JetStreamBus(nats.url)
    bus.connect()
    flaky, broken = Recorder(fail_times=2), Recorder(fail_times=10**6)
    bus.subscribe("flaky", frozenset({"payment.succeeded"}), flaky)
    bus.subscribe("broken", frozenset({"payment.succeeded"}), broken)
    bus.start_consumers()
    bus.publish(event())
    wait_until(lambda: len(flaky.seen) == 1)
    assert flaky.calls == 3 and bus.counters.redelivered["flaky"] == 2
    wait_until(lambda: bus.counters.dead_lettered.get("broken") == 1)
    assert broken.calls == 4
    assert bus.dead_letters() == 1
    bus.close()


def test_server_down_publish_fails_fast_then_resumes(nats: NatsServer) -> None:
    bus = JetStreamBus(nats.url)
    bus.connect()
    rec = Recorder()
    bus.subscribe("ledger", frozenset({"payment.succeeded"}), rec)
    bus.start_consumers()
    first = event()
    bus.publish(first)
    wait_until(lambda: len(rec.seen) == 1)
    nats.kill()
    missed = event()
    with pytest.raises(BusUnavailable):
        bus.publish(missed)  # no PubAck: it may or may not have been stored
    nats.start()  # same store dir: the stream and the durable consumer survive
    later = event()
    wait_until(lambda: _try_publish(bus, missed), timeout=30)  # the relay publishes it again
    assert _try_publish(bus, later)
    wait_until(lambda: later.event_id in {x.event_id for x in rec.seen}, timeout=30)
    time.sleep(0.5)
    # Each event once and in order: a republished event is deduplicated by its Nats-Msg-Id.
    assert [x.event_id for x in rec.seen] == [first.event_id, missed.event_id, later.event_id]
    bus.close()


def test_a_consumer_that_dies_mid_message_gets_it_again(
    nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jetstream, "ACK_WAIT_S", 1.0)
    dying = JetStreamBus(nats.url)
    dying.connect()
    stuck = threading.Event()
    dying.subscribe("ledger", frozenset({"payment.succeeded"}), lambda events: stuck.wait(30))
    dying.start_consumers()
    e = event()
    dying.publish(e)
    time.sleep(0.5)  # it is in flight, unacknowledged: now the process "dies"
    survivor = JetStreamBus(nats.url)
    survivor.connect()
    rec = Recorder()
    survivor.subscribe("ledger", frozenset({"payment.succeeded"}), rec)
    survivor.start_consumers()
    wait_until(lambda: [x.event_id for x in rec.seen] == [e.event_id], timeout=20)
    stuck.set()
    dying.close()
    survivor.close()


def _try_publish(bus: JetStreamBus, e: Event) -> bool:
    try:
        bus.publish(e)
        return True
    except BusUnavailable:
        return False


def test_outbox_grows_while_nats_is_down_and_drains_after(nats: NatsServer, tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from paygrid.bus.outbox import record_event
    from paygrid.bus.relay import OutboxRelay
    from paygrid.storage.database import Database
    from paygrid.storage.schema import outbox

    db = Database(f"sqlite:///{tmp_path / 'o.db'}")
    db.migrate()
    bus = JetStreamBus(nats.url)
    bus.connect()
    rec = Recorder()
    bus.subscribe("ledger", frozenset({"payment.succeeded"}), rec)
    bus.start_consumers()
    relay = OutboxRelay(db, bus)

    def unpublished() -> int:
        with db.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(outbox.c.published_at.is_(None))
                ).scalar_one()
            )

    nats.kill()
    for i in range(20):  # payments keep succeeding: their events wait in the outbox
        with db.transaction() as conn:
            record_event(conn, Numbered(f"pay_{i}", i))
        relay.pump()
    assert unpublished() == 20 and not relay.bus_available
    with db.read() as conn:  # not counted as delivery failures: nothing dead-lettered
        assert conn.execute(select(func.max(outbox.c.attempts))).scalar_one() == 0
    nats.start()
    wait_until(lambda: (relay.pump(), unpublished())[1] == 0, timeout=30, interval=0.2)
    wait_until(lambda: len(rec.seen) == 20, timeout=30)
    assert [e.payload["i"] for e in rec.seen] == list(range(20))
    bus.close()
    db.dispose()


class Picky:
    """A batch handler that refuses every batch holding a poison event (nothing of the batch
    is kept: all or nothing, as one transaction), or an event it must fail on ``fails[id]``
    more times, and records each call."""

    def __init__(self, poison: set[str], fails: dict[str, int] | None = None) -> None:
        self.poison, self.fails = poison, dict(fails or {})
        self.calls: list[list[str]] = []
        self.seen: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, events: Sequence[Event]) -> None:
        with self.lock:
            ids = [e.event_id for e in events]
            self.calls.append(ids)
            flaky = [i for i in ids if self.fails.get(i, 0) > 0]
            for i in flaky:
                self.fails[i] -= 1
            if self.poison & set(ids) or flaky:
                raise RuntimeError("poison")
            self.seen.extend(events)


def test_a_poison_message_dead_letters_alone_and_its_batch_is_processed_once(
    nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jetstream, "NAK_BACKOFF_S", (0.05,) * 10)
    monkeypatch.setattr(jetstream, "MAX_DELIVER", 3)
    bus = JetStreamBus(nats.url)
    bus.connect()
    good = [event(aggregate=f"pay_{n}") for n in range(20)]
    poison = event(aggregate="pay_poison")
    results = bus.publish_batch([*good[:10], poison, *good[10:]])  # before anyone pulls
    assert [r.ok for r in results] == [True] * 21
    picky = Picky({poison.event_id})
    bus.subscribe("ledger", frozenset({"payment.succeeded"}), picky)
    bus.start_consumers()
    wait_until(lambda: bus.counters.dead_lettered.get("ledger") == 1)
    assert bus.dead_letters() == 1
    assert len(picky.calls[0]) == 21  # one fetched batch, one call
    assert sorted(e.event_id for e in picky.seen) == sorted(e.event_id for e in good)  # once
    assert picky.calls.count([poison.event_id]) == 3  # alone, on each of MAX_DELIVER deliveries
    wait_until(lambda: bus.consumer_lag() == {"ledger": 0})
    bus.close()


def test_publish_batch_pipelines_and_keeps_order_per_aggregate(
    nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several events of an aggregate in one batch go out in waves (the next only after the
    earlier one was stored); the consumer holds an aggregate's later events behind a failure."""
    monkeypatch.setattr(jetstream, "NAK_BACKOFF_S", (0.2,) * 10)
    bus = JetStreamBus(nats.url)
    bus.connect()
    batch = [event(aggregate=f"pay_{n % 4}") for n in range(40)]
    assert all(r.ok for r in bus.publish_batch(batch))
    assert all(r.ok for r in bus.publish_batch(batch[:5]))  # republished: deduplicated
    assert bus.counters.duplicates == 5
    first_of_0 = batch[0]
    picky = Picky(set(), fails={first_of_0.event_id: 2})  # in the batch, then alone
    bus.subscribe("ledger", frozenset({"payment.succeeded"}), picky)
    bus.start_consumers()
    wait_until(lambda: len(picky.seen) == 40)
    seen = [e.event_id for e in picky.seen]
    assert sorted(seen) == sorted(e.event_id for e in batch)  # each once
    for n in range(4):  # in order per aggregate, pay_0's held behind its failed first event
        mine = [e.event_id for e in batch if e.aggregate_id == f"pay_{n}"]
        assert [e for e in seen if e in mine] == mine
    held = {e.event_id for e in batch if e.aggregate_id == "pay_0"} - {first_of_0.event_id}
    singles = picky.calls[1:32]  # after the failed batch: one at a time, none of the held
    assert singles[0] == [first_of_0.event_id] and all(len(c) == 1 for c in singles)
    assert len(held) == 9 and not held & {c[0] for c in singles}
    bus.close()
