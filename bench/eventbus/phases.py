"""The measured phases: raw JetStream in this process, then paygrid's outbox, relay and consumer."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
from common import Probes, spread
from sqlalchemy import func, select

from eventbus.children import Child
from eventbus.shape import (
    POLL_S,
    RAW_CONSUMER,
    RAW_STREAM,
    RAW_SUBJECT,
    BenchEvent,
    consume_effects,
    consumer_config,
    effects,
    payload,
    stream_config,
)
from paygrid.bus import jetstream as pjs
from paygrid.bus.outbox import record_event
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.schema import outbox

OWN = "bench (this process)"


def cpu_snapshot(probes: Probes) -> dict[str, float]:
    snap = {name: probe() for name, probe in probes.items()}
    snap[OWN] = time.process_time()
    return snap


def cpu_since(probes: Probes, before: dict[str, float]) -> dict[str, float]:
    now = cpu_snapshot(probes)
    return {name: now[name] - before.get(name, now[name]) for name in now}


# --- figures -----------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    what: str
    events: int
    done: int = 0
    elapsed_s: float = 0.0
    timed_out: bool = False
    cpu_s: dict[str, float] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""

    @property
    def rate(self) -> float:
        return round(self.done / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        n = max(self.done, 1)
        return {
            "what": self.what,
            "events": self.events,
            "done": self.done,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": self.rate,
            "timed_out": self.timed_out,
            "cpu_us_per_event": {k: round(v * 1e6 / n, 1) for k, v in self.cpu_s.items()},
            "latency": self.latency,
            "note": self.note,
        }


# --- raw JetStream (in this process) -----------------------------------------------------------
async def _timed(phase: Phase, probes: Probes, work: Callable[[], Any], timeout: float) -> None:
    """Run ``work()`` (a coroutine factory) under a deadline; fill in time and CPU."""
    before = cpu_snapshot(probes)
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await work()
    except TimeoutError:
        phase.timed_out = True
    phase.elapsed_s = time.perf_counter() - t0
    phase.cpu_s = cpu_since(probes, before)


async def raw_phases(
    nats_url: str, n: int, body: bytes, db: Database, probes: Probes, timeout: float
) -> list[Phase]:
    nc = await nats.connect(nats_url, name="bench-raw", connect_timeout=pjs.CONNECT_TIMEOUT_S)
    try:
        js = nc.jetstream(timeout=pjs.PUBLISH_TIMEOUT_S)
        await js.add_stream(stream_config(RAW_STREAM, RAW_SUBJECT))

        sync = Phase("raw_publish", "raw js.publish, await each PubAck", n)

        async def publish_each() -> None:
            for i in range(n):
                await js.publish(RAW_SUBJECT, body, headers={"Nats-Msg-Id": f"s{i}"})
                sync.done += 1

        await _timed(sync, probes, publish_each, timeout)

        batched = Phase("raw_publish_async", "raw js.publish_async, 100 in flight, gather", n)

        async def publish_batches() -> None:
            for start in range(0, n, 100):
                futures = [
                    await js.publish_async(RAW_SUBJECT, body, headers={"Nats-Msg-Id": f"a{i}"})
                    for i in range(start, min(n, start + 100))
                ]
                await asyncio.gather(*futures)
                batched.done += len(futures)

        await _timed(batched, probes, publish_batches, timeout)

        out = [sync, batched]
        fetch = pjs.FETCH_BATCH
        for durable, with_db in (("raw_ack", False), ("raw_db", True)):
            what = f"raw pull fetch({fetch}) + ack each"
            if with_db:
                what = f"raw pull fetch({fetch}) + inbox/effects txn a batch inline + ack each"
            phase = Phase("raw_consume_db" if with_db else "raw_consume", what, n)
            await js.add_consumer(RAW_STREAM, consumer_config(durable, RAW_SUBJECT))
            sub = await js.pull_subscribe_bind(durable=durable, stream=RAW_STREAM)

            async def consume(
                phase: Phase = phase, sub: Any = sub, with_db: bool = with_db
            ) -> None:
                while phase.done < n:
                    try:
                        msgs = await sub.fetch(min(fetch, n - phase.done), timeout=1.0)
                    except TimeoutError:
                        continue
                    if with_db:
                        now = utcnow()
                        ids = [(m.headers or {}).get("Nats-Msg-Id", "") for m in msgs]
                        consume_effects(db, RAW_CONSUMER, [(i, "raw", now) for i in ids])
                    for msg in msgs:
                        await msg.ack()
                        phase.done += 1

            await _timed(phase, probes, consume, timeout)
            await sub.unsubscribe()
            out.append(phase)
        return out
    finally:
        await nc.close()


# --- paygrid's path ----------------------------------------------------------------------------
def produce(db: Database, phase: str, n: int, batch: int, timeout: float, rate: float = 0.0) -> int:
    """The api process's part: record_event in transactions of ``batch`` events. Returns how
    many were written before ``timeout``."""
    t0 = time.monotonic()
    for start in range(0, n, batch):
        if time.monotonic() - t0 > timeout:
            return start
        if rate:
            delay = t0 + start / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        with db.transaction() as conn:
            for i in range(start, min(n, start + batch)):
                record_event(conn, BenchEvent(f"pay_{phase}_{i}", payload(phase, i)))
    return n


def max_seq(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.coalesce(func.max(outbox.c.seq), 0))).scalar_one())


def published_since(db: Database, seq0: int) -> tuple[int, datetime | None]:
    with db.read() as conn:
        count, last = conn.execute(
            select(func.count(), func.max(outbox.c.published_at)).where(
                outbox.c.seq > seq0, outbox.c.published_at.is_not(None)
            )
        ).one()
    return int(count), _aware(last)


def consumed(db: Database, phase: str) -> tuple[int, datetime | None]:
    with db.read() as conn:
        count, last = conn.execute(
            select(func.count(), func.max(effects.c.consumed_at)).where(effects.c.phase == phase)
        ).one()
    return int(count), _aware(last)


def _aware(value: Any) -> datetime | None:
    """func.max() loses the column type: SQLite hands back a string or a naive datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def wait_count(
    phase: Phase,
    probe: Callable[[], tuple[int, datetime | None]],
    t0: datetime,
    timeout: float,
    expect: int | None = None,
) -> None:
    """Poll until ``probe`` counts ``expect`` (phase.events) rows; elapsed runs from ``t0`` to
    the last row's time."""
    deadline = time.monotonic() + timeout
    target = phase.events if expect is None else expect
    count, last = probe()
    while count < target:
        if time.monotonic() > deadline:
            phase.timed_out = True
            break
        time.sleep(POLL_S)
        count, last = probe()
    phase.done = count
    phase.elapsed_s = (last - t0).total_seconds() if last else 0.0


def latencies(db: Database, phase: str, seq0: int) -> dict[str, dict[str, float]]:
    """Per event, from the rows' own timestamps: outbox created -> effect committed, and
    created -> marked published (the relay marks a batch after publishing all of it)."""
    with db.read() as conn:
        rows = conn.execute(
            select(outbox.c.created_at, outbox.c.published_at, effects.c.consumed_at)
            .join(effects, effects.c.event_id == outbox.c.event_id)
            .where(effects.c.phase == phase, outbox.c.seq > seq0)
        ).all()
    e2e = [(r.consumed_at - r.created_at).total_seconds() for r in rows]
    relay = [(r.published_at - r.created_at).total_seconds() for r in rows if r.published_at]
    return {"outbox -> consumed": spread(e2e), "outbox -> marked published": spread(relay)}


def paygrid_phases(
    db: Database, kids: dict[str, Child], probes: Probes, args: argparse.Namespace
) -> list[Phase]:
    n, batch, timeout = args.events, args.batch, args.timeout
    out: list[Phase] = []

    write = Phase("paygrid_outbox_write", f"record_event, {batch} a transaction, nothing else", n)
    before = cpu_snapshot(probes)
    t0 = time.perf_counter()
    write.done = produce(db, "staged", n, batch, timeout)
    write.elapsed_s, write.timed_out = time.perf_counter() - t0, write.done < n
    write.cpu_s = cpu_since(probes, before)
    out.append(write)

    relay = Phase("paygrid_relay", "OutboxRelay + JetStreamBus drain the outbox to JetStream", n)
    before = cpu_snapshot(probes)
    start = utcnow()
    kids["relay"].go.set()
    wait_count(relay, lambda: published_since(db, 0), start, timeout)
    relay.cpu_s = cpu_since(probes, before)
    out.append(relay)

    drain = Phase(
        "paygrid_consumer", "JetStreamBus consumer drains the stream: inbox + effect txn", n
    )
    before = cpu_snapshot(probes)
    start = utcnow()
    kids["consumer"].go.set()
    wait_count(drain, lambda: consumed(db, "staged"), start, timeout)
    drain.cpu_s = cpu_since(probes, before)
    out.append(drain)

    e2e = Phase(
        "paygrid_e2e",
        f"outbox ({batch}/txn) -> relay -> JetStream -> consumer, all running: first write "
        "to last effect",
        n,
    )
    seq0 = max_seq(db)
    before = cpu_snapshot(probes)
    start = utcnow()
    t0 = time.perf_counter()
    written = produce(db, "e2e", n, batch, timeout)
    e2e.timed_out = written < n
    e2e.note = f"outbox writes took {time.perf_counter() - t0:.3f} s"
    wait_count(e2e, lambda: consumed(db, "e2e"), start, timeout, written)
    e2e.cpu_s = cpu_since(probes, before)
    e2e.latency = latencies(db, "e2e", seq0)
    out.append(e2e)

    m, rate = args.latency_events, args.latency_rate
    paced = Phase("paygrid_paced", f"{m} events, 1 a transaction, at {rate:g}/s: latency", m)
    seq0 = max_seq(db)
    before = cpu_snapshot(probes)
    start = utcnow()
    written = produce(db, "paced", m, 1, timeout, rate)
    paced.timed_out = written < m
    wait_count(paced, lambda: consumed(db, "paced"), start, timeout, written)
    paced.cpu_s = cpu_since(probes, before)
    paced.latency = latencies(db, "paced", seq0)
    out.append(paced)
    return out
