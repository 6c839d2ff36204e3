"""The relay and the consumer as spawned processes, as the prod profile's relay and ledger roles
run them."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from queue import Empty

from eventbus.shape import CONSUMER, EVENT_TYPE, START_TIMEOUT_S, consume_effects
from paygrid.bus import jetstream as pjs
from paygrid.bus.ports import Event
from paygrid.storage.database import Database


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


def quiet_disconnect() -> None:
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
        quiet_disconnect()
        bus.close()
        db.dispose()


def consumer_main(db_url: str, nats_url: str, go: MpEvent, stop: MpEvent, out: Queue[str]) -> None:
    """A consumer role: a durable consumer bound through JetStreamBus, a batch handler (inbox +
    effects, one transaction a fetched batch)."""
    _child_logging("consumer")
    db = Database(db_url)

    def handle(events: Sequence[Event]) -> None:  # a BatchHandler: one transaction a batch
        consume_effects(
            db,
            CONSUMER,
            [(e.event_id, str(e.payload["data"]["bench_phase"]), e.occurred_at) for e in events],
        )

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
        quiet_disconnect()
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
