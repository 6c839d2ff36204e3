"""NATS JetStream adapter behind :class:`MessageBus` (production profile).

Subjects and payloads (schema version 1, documented in docs/bus.md):
- events: ``paygrid.events.v1.<event_type>`` in stream ``PAYGRID_EVENTS``; the body is JSON
  ``{"event_id", "event_type", "aggregate_id", "occurred_at", "version", "data"}`` and the
  header ``Nats-Msg-Id`` is the event id, so JetStream drops a republished duplicate.
- dead letters: ``paygrid.dlq.v1.<consumer>`` in stream ``PAYGRID_DLQ``, the original body with
  headers ``Paygrid-Original-Subject``, ``Paygrid-Consumer``, ``Paygrid-Error``,
  ``Paygrid-Deliveries``.

Each consumer is a durable pull consumer with explicit acks: a handler that returns acks, one
that raises is redelivered after a backoff, and after ``MAX_DELIVER`` attempts the message is
parked on the dead-letter subject and acknowledged. Consumers still deduplicate (inbox): the
bus delivers at least once. Pulling in bounded batches is the back-pressure: a slow consumer
is simply behind (consumer lag), never flooded.

paygrid's handlers are synchronous (they block on the database), so the adapter runs its own
asyncio loop in one thread and calls handlers in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from paygrid.bus.batching import Verdict, handle_batch
from paygrid.bus.codec import envelope_bytes, envelope_from_bytes
from paygrid.bus.ports import (
    HELD,
    PUBLISHED,
    BatchHandler,
    BusUnavailable,
    Event,
    Outcome,
    PublishResult,
    raise_unless_published,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS_STREAM = "PAYGRID_EVENTS"
EVENTS_PREFIX = "paygrid.events.v1."
DLQ_STREAM = "PAYGRID_DLQ"
DLQ_PREFIX = "paygrid.dlq.v1."
PUBLISH_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
ACK_WAIT_S = 30.0  # a consumer that dies mid-message sees it again after this
MAX_DELIVER = 10
NAK_BACKOFF_S = (0.5, 1, 2, 5, 10, 30, 60, 60, 60, 60)
FETCH_BATCH = 256  # a consumer's batch: one handler call, one transaction (inbox: <= 1000)
MAX_PUBLISH_BATCH = 1000  # events one publish_batch takes (the relay sends 256)
FETCH_WAIT_S = 1.0
MAX_ACK_PENDING = 1024
DUPLICATE_WINDOW_S = 3600.0  # a relay that republishes within an hour is deduplicated
STREAM_MAX_BYTES = 4 * 1024**3
STREAM_MAX_AGE_S = 7 * 24 * 3600.0
ACK_V1_TOKENS = 9


def _deliveries(msg: Msg) -> int:
    """``msg.metadata.num_delivered``, read from the ack subject's delivery token without
    building the whole Metadata (per message on the hot path); any other subject shape goes
    through nats-py's parser."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == ACK_V1_TOKENS and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4])  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<n>
    return int(msg.metadata.num_delivered)


def _backoff(msg: Msg) -> float:
    """The redelivery delay after a failed delivery of ``msg``."""
    deliveries = max(1, msg.metadata.num_delivered)
    return NAK_BACKOFF_S[min(deliveries, len(NAK_BACKOFF_S)) - 1]


def subject_for(event_type: str) -> str:
    assert event_type and " " not in event_type and ">" not in event_type, event_type
    return EVENTS_PREFIX + event_type


@dataclass
class BusCounters:
    """Plain counters the metrics endpoint reads."""

    published: int = 0
    duplicates: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    redelivered: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)


class JetStreamBus:
    def __init__(self, url: str, name: str = "paygrid") -> None:
        self._url = url
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats", daemon=True)
        self._thread.start()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subscriptions: list[tuple[str, frozenset[str], BatchHandler]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.counters = BusCounters()

    # --- lifecycle ------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect (retrying forever in the background after the first success) and create
        the streams. Raises BusUnavailable if the server cannot be reached now."""
        self._run(self._connect(), CONNECT_TIMEOUT_S * 3)

    async def _connect(self) -> None:
        try:
            self._nc = await nats.connect(
                self._url,
                name=self._name,
                connect_timeout=CONNECT_TIMEOUT_S,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            )
        except (NatsError, OSError) as exc:
            raise BusUnavailable(f"cannot reach NATS at {self._url}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        await self._ensure_stream(EVENTS_STREAM, EVENTS_PREFIX + ">")
        await self._ensure_stream(DLQ_STREAM, DLQ_PREFIX + ">")

    async def _ensure_stream(self, name: str, subject: str) -> None:
        assert self._js is not None
        config = StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_bytes=STREAM_MAX_BYTES,
            max_age=STREAM_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
        )
        try:
            await self._js.stream_info(name)
            await self._js.update_stream(config)
        except NotFoundError:
            await self._js.add_stream(config)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def _on_disconnect(self) -> None:
        log.warning("nats: disconnected from %s", self._url)

    async def _on_reconnect(self) -> None:
        log.info("nats: reconnected to %s", self._url)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def close(self) -> None:
        async def stop() -> None:
            self._stopping.set()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.drain()

        try:
            self._run(stop(), 10)
        except Exception:
            log.exception("nats: close failed")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # --- MessageBus -----------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Return once JetStream stored the event (PubAck); else raise BusUnavailable."""
        raise_unless_published(self.publish_batch((event,))[0])

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        """Publish with pipelined acknowledgements: each wave (at most one event per aggregate)
        is sent at once and its PubAcks awaited together, so an event is only sent after the
        earlier event of its aggregate was stored. PUBLISHED once JetStream stored it (a
        duplicate Nats-Msg-Id counts: it was stored before), else UNAVAILABLE or HELD."""
        assert len(events) <= MAX_PUBLISH_BATCH, len(events)
        if not events:
            return []
        waves = len(events) - len({e.aggregate_id for e in events}) + 1
        try:
            return self._run(self._publish_batch(events), PUBLISH_TIMEOUT_S * (waves + 1))
        except BusUnavailable as exc:
            return [PublishResult(Outcome.UNAVAILABLE, str(exc))] * len(events)

    async def _publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        results: list[PublishResult] = [HELD] * len(events)
        pending = list(range(len(events)))
        while pending:
            wave: list[int] = []
            later: list[int] = []
            seen: set[str] = set()
            for i in pending:
                aggregate = events[i].aggregate_id
                (later if aggregate in seen else wave).append(i)
                seen.add(aggregate)
            acked = await self._publish_wave([events[i] for i in wave])
            for i, result in zip(wave, acked, strict=True):
                results[i] = result
            failed = {events[i].aggregate_id for i in wave if not results[i].ok}
            pending = [i for i in later if events[i].aggregate_id not in failed]
        return results

    async def _publish_wave(self, events: Sequence[Event]) -> list[PublishResult]:
        if self._js is None or not self.connected:
            return [PublishResult(Outcome.UNAVAILABLE, "not connected to NATS")] * len(events)
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for event in events:
                futures.append(
                    await self._js.publish_async(
                        subject_for(event.event_type),
                        envelope_bytes(event),
                        wait_stall=PUBLISH_TIMEOUT_S,
                        headers={"Nats-Msg-Id": event.event_id},
                    )
                )
        except (TimeoutError, NatsError, OSError) as exc:
            log.debug("nats: publish stopped after %d: %s", len(futures), exc)
        if futures:
            await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT_S)
        return [
            self._acked(e, futures[i] if i < len(futures) else None) for i, e in enumerate(events)
        ]

    def _acked(self, event: Event, future: asyncio.Future[PubAck] | None) -> PublishResult:
        if future is None or not future.done():
            if future is not None:
                future.cancel()  # frees its slot; a late PubAck is ignored
            return PublishResult(Outcome.UNAVAILABLE, f"publish {event.event_id}: no PubAck")
        exc = future.exception()
        if exc is not None:
            error = f"publish {event.event_id}: {type(exc).__name__}: {exc}"
            return PublishResult(Outcome.UNAVAILABLE, error)
        self.counters.published += 1
        if future.result().duplicate:
            self.counters.duplicates += 1
        return PUBLISHED

    def subscribe(self, consumer: str, event_types: frozenset[str], handler: BatchHandler) -> None:
        """Register a durable consumer; it starts pulling at :meth:`start_consumers`."""
        assert consumer.replace("-", "").replace("_", "").isalnum(), consumer
        self._subscriptions.append((consumer, event_types, handler))

    def start_consumers(self) -> None:
        for consumer, types, handler in self._subscriptions:
            self._run(self._bind(consumer, types, handler), CONNECT_TIMEOUT_S * 3)

    async def _bind(self, consumer: str, types: frozenset[str], handler: BatchHandler) -> None:
        assert self._js is not None
        config = ConsumerConfig(
            durable_name=consumer,
            filter_subjects=sorted(subject_for(t) for t in types),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=MAX_DELIVER + 1,  # we park it ourselves on the last try
            max_ack_pending=MAX_ACK_PENDING,
        )
        await self._js.add_consumer(EVENTS_STREAM, config)
        sub = await self._js.pull_subscribe_bind(durable=consumer, stream=EVENTS_STREAM)
        self._tasks.append(asyncio.create_task(self._pull(consumer, sub, handler)))

    async def _pull(
        self, consumer: str, sub: JetStreamContext.PullSubscription, handler: BatchHandler
    ) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except TimeoutError:
                continue
            except (NatsError, OSError) as exc:
                log.warning("nats: fetch for %s failed: %s", consumer, exc)
                await asyncio.sleep(0.5)
                continue
            await self._handle(consumer, msgs, handler)

    async def _handle(self, consumer: str, msgs: list[Msg], handler: BatchHandler) -> None:
        """The fetched batch to the handler in one call (in a worker thread), then ack what
        it processed; failures go one at a time (paygrid.bus.batching)."""
        good: list[Msg] = []
        events: list[Event] = []
        for msg in msgs:
            if _deliveries(msg) > 1:
                self.counters.redelivered[consumer] = self.counters.redelivered.get(consumer, 0) + 1
            try:
                events.append(envelope_from_bytes(msg.data))
            except Exception as exc:  # not an event at all: it fails alone
                await self._failed(consumer, msg, f"{type(exc).__name__}: {exc}")
                continue
            good.append(msg)
        if not good:
            return
        last = [_deliveries(m) >= MAX_DELIVER for m in good]
        verdicts = await asyncio.to_thread(handle_batch, consumer, handler, events, last)
        failed = [m for m, v in zip(good, verdicts, strict=True) if v.verdict is Verdict.FAILED]
        hold_s = max((_backoff(m) for m in failed), default=0.0)
        for msg, handled in zip(good, verdicts, strict=True):
            if handled.verdict is Verdict.DONE:
                self.counters.delivered[consumer] = self.counters.delivered.get(consumer, 0) + 1
                await msg.ack()
            elif handled.verdict is Verdict.HELD:
                await msg.nak(delay=hold_s)  # back after the event it waits for
            else:
                await self._failed(consumer, msg, handled.error)

    async def _failed(self, consumer: str, msg: Msg, error: str) -> None:
        deliveries = msg.metadata.num_delivered
        if deliveries < MAX_DELIVER:
            log.warning(
                "%s failed on %s (delivery %d): %s", consumer, msg.subject, deliveries, error
            )
            await msg.nak(delay=_backoff(msg))
            return
        log.error(
            "%s gave up on %s after %d deliveries: %s; dead-lettered",
            consumer,
            msg.subject,
            deliveries,
            error,
        )
        assert self._js is not None
        await self._js.publish(
            DLQ_PREFIX + consumer,
            msg.data,
            headers={
                "Paygrid-Original-Subject": msg.subject,
                "Paygrid-Consumer": consumer,
                "Paygrid-Error": error.replace("\n", " "),
                "Paygrid-Deliveries": str(deliveries),
            },
        )
        self.counters.dead_lettered[consumer] = self.counters.dead_lettered.get(consumer, 0) + 1
        await msg.ack()

    # --- observability --------------------------------------------------------------------
    def consumer_lag(self) -> dict[str, int]:
        """Messages each durable consumer has not yet acknowledged (pending + in flight)."""

        async def lag() -> dict[str, int]:
            assert self._js is not None
            out: dict[str, int] = {}
            for consumer, _, _ in self._subscriptions:
                info = await self._js.consumer_info(EVENTS_STREAM, consumer)
                out[consumer] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            return out

        return self._run(lag(), 5)

    def dead_letters(self) -> int:
        async def count() -> int:
            assert self._js is not None
            info = await self._js.stream_info(DLQ_STREAM)
            return int(info.state.messages)

        return self._run(count(), 5)

    # --- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise BusUnavailable(f"NATS did not answer within {timeout}s") from exc
