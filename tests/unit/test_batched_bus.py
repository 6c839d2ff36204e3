"""The batched bus in process, on SQLite and PostgreSQL: the relay publishes a batch, each
consumer takes its part of it in one transaction with inbox dedup for the batch; a poison event
fails, and dead-letters, alone while the rest of its batch is processed once; order per
aggregate holds through failures and backoff; a bus that fails in the middle of a batch loses
nothing; a relay that dies before marking its batch published redelivers it, and the inbox
drops it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from paygrid.bus import relay as relay_module
from paygrid.bus.inbox import first_deliveries
from paygrid.bus.inprocess import InProcessBus
from paygrid.bus.outbox import record_event
from paygrid.bus.ports import Event, Outcome, PublishResult
from paygrid.bus.relay import OutboxRelay
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.schema import inbox, outbox
from tests.events import Numbered

TYPES = frozenset({Numbered.TYPE})
effects_metadata = MetaData()
effects = Table(  # what the test consumers did, in the order they did it
    "test_bus_effects",
    effects_metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("consumer", String(32), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("ref", String(32), nullable=False),
    Column("i", Integer, nullable=False),
)


@pytest.fixture
def db(database_url: str | None, tmp_path: Path) -> Iterator[Database]:
    database = Database(database_url or f"sqlite:///{tmp_path / 'bus.db'}")
    database.migrate()
    effects_metadata.create_all(database.engine)
    yield database
    database.dispose()


class Consumer:
    """A BatchHandler as paygrid's consumers are: one transaction a batch, inbox dedup for
    the batch, then the effects; raises (rolling the batch back) while a poison is in it."""

    def __init__(self, db: Database, name: str, poison: set[tuple[str, int]] | None = None):
        self.db, self.name, self.poison = db, name, poison or set()
        self.calls: list[list[str]] = []  # the events of each call, as "ref:i"

    def __call__(self, events: Sequence[Event]) -> None:
        self.calls.append([f"{e.payload['ref']}:{e.payload['i']}" for e in events])
        with self.db.transaction() as conn:
            new = first_deliveries(conn, self.name, [e.event_id for e in events])
            rows = [
                {"consumer": self.name, "event_id": e.event_id} | dict(e.payload)
                for e in events
                if e.event_id in new
            ]
            if rows:
                conn.execute(insert(effects), rows)
            bad = [e for e in events if (e.payload["ref"], e.payload["i"]) in self.poison]
            if bad:
                raise RuntimeError(f"poison {bad[0].event_id}")


class Clock:
    """The relay's clock, moved past backoffs by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = relay_module.MAX_BACKOFF_S + 1) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(relay_module, "utcnow", c)
    return c


def record(db: Database, *events: tuple[str, int]) -> None:
    with db.transaction() as conn:
        for ref, i in events:
            record_event(conn, Numbered(ref, i))


def done(db: Database, consumer: str) -> list[tuple[str, int]]:
    with db.read() as conn:
        rows = conn.execute(
            select(effects.c.ref, effects.c.i).where(effects.c.consumer == consumer).order_by("n")
        )
        return [(r.ref, r.i) for r in rows]


def outbox_rows(db: Database) -> dict[tuple[str, int], tuple[bool, int, bool]]:
    """(ref, i) -> (published, attempts, dead)."""
    from paygrid.bus.codec import envelope_from_bytes

    with db.read() as conn:
        out = {}
        for row in conn.execute(select(outbox)):
            p = envelope_from_bytes(row.payload).payload
            out[(p["ref"], p["i"])] = (row.published_at is not None, row.attempts, row.dead)
        return out


def test_a_poison_event_dead_letters_alone_the_rest_of_its_batch_is_processed_once(
    db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "MAX_ATTEMPTS", 3)
    bus = InProcessBus()
    picky = Consumer(db, "picky", poison={("p", 0)})
    easy = Consumer(db, "easy")
    bus.subscribe("picky", TYPES, picky)
    bus.subscribe("easy", TYPES, easy)
    relay = OutboxRelay(db, bus)
    good = [(f"a{n}", 0) for n in range(8)]
    record(db, *good[:4], ("p", 0), *good[4:], ("p", 1))  # p:1 comes after the poison

    assert relay.pump() == 8
    assert picky.calls[0] == [f"{r}:{i}" for r, i in (*good[:4], ("p", 0), *good[4:], ("p", 1))]
    assert len(picky.calls[1:]) == 9  # then one at a time; p:1 held behind p:0, not handed on
    assert "p:1" not in {c[0] for c in picky.calls[1:]}
    assert done(db, "picky") == good  # each once, in order; the failed batch left nothing
    assert done(db, "easy") == [*good[:4], ("p", 0), *good[4:], ("p", 1)]
    rows = outbox_rows(db)
    assert rows[("p", 0)] == (False, 1, False) and rows[("p", 1)] == (False, 0, False)

    assert relay.pump() == 0  # p:0 waits out its backoff, and p:1 behind it
    for _ in range(2):
        clock.advance()
        relay.pump()
    rows = outbox_rows(db)
    assert rows[("p", 0)] == (False, 3, True)  # dead-lettered alone, after MAX_ATTEMPTS
    assert rows[("p", 1)] == (False, 0, False)  # held, never counted as a failure
    assert relay.pump() == 1  # a dead event no longer holds its aggregate back
    rows = outbox_rows(db)
    assert all(published for key, (published, _, _) in rows.items() if key != ("p", 0))
    assert done(db, "picky") == [*good, ("p", 1)]  # p:1 went on once p:0 was parked
    assert sorted(done(db, "easy")) == sorted([*good, ("p", 0), ("p", 1)])  # still once each
    with db.read() as conn:
        seen = conn.execute(select(func.count()).select_from(inbox)).scalar_one()
    assert seen == 9 + 10  # picky: all but the poison; easy: all


def test_order_per_aggregate_holds_through_failures_and_backoff(db: Database, clock: Clock) -> None:
    bus = InProcessBus()
    flaky = Consumer(db, "flaky", poison={("a", 1)})
    bus.subscribe("flaky", TYPES, flaky)
    relay = OutboxRelay(db, bus)
    record(db, ("a", 1), ("b", 1), ("a", 2))
    record(db, ("a", 3), ("b", 2))
    assert relay.pump() == 2  # b:1, b:2; a:1 failed, a:2 and a:3 held
    assert done(db, "flaky") == [("b", 1), ("b", 2)]
    record(db, ("a", 4), ("c", 1))  # new events of a wait behind a:1's backoff too
    assert relay.pump() == 1
    assert done(db, "flaky")[-1] == ("c", 1)
    clock.advance()
    assert relay.pump() == 0  # a:1 fails again: still nothing of a
    flaky.poison.clear()
    clock.advance()
    assert relay.pump() == 4
    assert [x for x in done(db, "flaky") if x[0] == "a"] == [("a", n) for n in (1, 2, 3, 4)]


class BusDownMidBatch:
    """The in-process bus, except that the bus goes away after ``take`` events of a batch (as
    JetStream's connection dropping in the middle of a pipelined batch)."""

    def __init__(self, bus: InProcessBus, take: int) -> None:
        self.bus, self.take = bus, take

    def subscribe(self, *args: object) -> None:
        raise AssertionError("not used")

    def publish(self, event: Event) -> None:
        raise AssertionError("not used")

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        taken = self.bus.publish_batch(events[: self.take])
        down = PublishResult(Outcome.UNAVAILABLE, "connection lost")
        return taken + [down] * (len(events) - len(taken))


def test_a_bus_failing_in_the_middle_of_a_batch_loses_nothing(db: Database) -> None:
    bus = InProcessBus()
    consumer = Consumer(db, "c")
    bus.subscribe("c", TYPES, consumer)
    events = [(f"r{n % 3}", n) for n in range(12)]
    record(db, *events)
    relay = OutboxRelay(db, BusDownMidBatch(bus, take=5))  # type: ignore[arg-type]
    assert relay.pump() == 5
    assert not relay.bus_available
    rows = outbox_rows(db)
    assert [k for k in events if rows[k][0]] == events[:5]
    assert all(attempts == 0 and not dead for _, attempts, dead in rows.values())  # no failure
    back = OutboxRelay(db, bus)  # the bus is back
    assert back.pump() == 7 and back.bus_available
    assert done(db, "c") == events  # each once, in order
    assert all(published for published, _, _ in outbox_rows(db).values())


def test_a_relay_that_dies_before_marking_its_batch_redelivers_it_and_the_inbox_drops_it(
    db: Database,
) -> None:
    bus = InProcessBus()
    consumer = Consumer(db, "c")
    bus.subscribe("c", TYPES, consumer)
    events = [(f"r{n}", n) for n in range(6)]
    record(db, *events)
    relay = OutboxRelay(db, bus)
    # The relay's pass up to its publish: the consumers commit, then the process dies.
    with db.read() as conn:
        rows = conn.execute(relay_module.DUE, {"now": utcnow()}).all()
    assert all(r.ok for r in bus.publish_batch([relay_module.row_to_event(r) for r in rows]))
    assert relay.pump() == 6  # the restarted relay sends the whole batch again
    assert consumer.calls[0] == consumer.calls[1]
    assert done(db, "c") == events  # processed once


def test_first_deliveries_records_a_batch_and_tells_the_repeats(db: Database) -> None:
    ids = [f"evt_{n}" for n in range(5)]
    with db.transaction() as conn:
        assert first_deliveries(conn, "x", ids[:3]) == set(ids[:3])
    with db.transaction() as conn:
        assert first_deliveries(conn, "x", ids) == set(ids[3:])  # the repeats dropped
        assert first_deliveries(conn, "y", ids[:2]) == set(ids[:2])  # per consumer
        assert first_deliveries(conn, "x", []) == set()
    big = [f"evt_big_{n}" for n in itertools.islice(itertools.count(), 1000)]
    with db.transaction() as conn:
        assert first_deliveries(conn, "x", big) == set(big)


def test_an_event_read_from_its_envelope_is_sent_on_as_it_is() -> None:
    """The relay publishes an outbox row's bytes without encoding them again; an event made
    from it with dataclasses.replace is another event and is encoded afresh."""
    from dataclasses import replace

    from paygrid.bus.codec import envelope_bytes, envelope_from_bytes

    body = envelope_bytes(Event("evt_1", Numbered.TYPE, "a", utcnow(), {"ref": "a", "i": 1}))
    event = envelope_from_bytes(body.decode())
    assert envelope_bytes(event) == body and event.wire == body
    twin = replace(event, event_id="evt_2")
    assert twin.wire is None and envelope_from_bytes(envelope_bytes(twin)).event_id == "evt_2"
