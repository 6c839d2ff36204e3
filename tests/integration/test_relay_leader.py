"""Several relay copies at once on PostgreSQL: one leads and publishes, in order; when its
session dies another takes over; no event is published twice on purpose, none skipped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import pytest

from paygrid.bus.outbox import record_event
from paygrid.bus.ports import PUBLISHED, Event, PublishResult
from paygrid.bus.relay import OutboxRelay
from paygrid.storage.database import Database
from paygrid.storage.leader import LeaderLock
from tests.events import Numbered
from tests.support import PostgresServer

pytestmark = pytest.mark.timeout(120)


class Recording:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def subscribe(self, *args: object) -> None:
        pass

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def publish_batch(self, events: Sequence[Event]) -> list[PublishResult]:
        self.events.extend(events)
        return [PUBLISHED] * len(events)


def test_only_the_leader_publishes_and_another_takes_over(postgres: PostgresServer) -> None:
    url = postgres.create_database("relay_" + uuid.uuid4().hex[:8])
    db_a, db_b = Database(url), Database(url)
    db_a.migrate()
    bus_a, bus_b = Recording(), Recording()
    lock_a = LeaderLock(db_a, "outbox-relay")
    relay_a = OutboxRelay(db_a, bus_a, lock_a)
    relay_b = OutboxRelay(db_b, bus_b, LeaderLock(db_b, "outbox-relay"))
    with db_a.transaction() as conn:
        for i in range(5):
            record_event(conn, Numbered(f"pay_{i}", i))
    assert relay_a.pump() == 5
    assert relay_b.pump() == 0  # standby
    with db_a.transaction() as conn:
        for i in range(5, 8):
            record_event(conn, Numbered(f"pay_{i}", i))
    assert relay_b.pump() == 0
    lock_a.release()  # the leader's session dies (process killed, connection gone)
    # The server frees the lock once its backend has noticed the session is gone: B takes
    # over on one of its next beats.
    deadline = time.monotonic() + 10
    taken_over = relay_b.pump()
    while taken_over == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        taken_over = relay_b.pump()
    assert taken_over == 3
    assert relay_a.pump() == 0  # now A is the standby
    published = [e.payload["i"] for e in bus_a.events + bus_b.events]
    assert published == list(range(8))
    db_a.dispose()
    db_b.dispose()
