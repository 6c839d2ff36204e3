"""The bench event, its streams and consumers as paygrid configures them, and the consumer's unit
of work (inbox + one effect row per event, a batch a transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from sqlalchemy import Column, Index, MetaData, String, Table, insert

from paygrid.bus import jetstream as pjs
from paygrid.bus.codec import envelope_bytes, event_data
from paygrid.bus.inbox import first_deliveries
from paygrid.bus.ports import Event
from paygrid.channels import registry
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.types import UTCDateTime

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
            "channel": registry.NAMES[0],
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
            "code_url": f"https://qr.example/pay?code=bench{i:08d}",  # as long as a real one
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


Effect = tuple[str, str, datetime]  # event id, bench phase, when the event occurred


def consume_effects(db: Database, consumer: str, batch: Sequence[Effect]) -> None:
    """The consumer's unit of work for a fetched batch, as a paygrid BatchHandler does it: one
    transaction, inbox dedup for the batch in one statement, the new effect rows in one
    executemany."""
    with db.transaction() as conn:
        new = first_deliveries(conn, consumer, [event_id for event_id, _, _ in batch])
        now = utcnow()
        rows = [
            {"event_id": e, "phase": phase, "occurred_at": occurred, "consumed_at": now}
            for e, phase, occurred in batch
            if e in new
        ]
        if rows:
            conn.execute(insert(effects), rows)
