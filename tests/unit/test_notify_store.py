"""The notifier's work queue on both databases: one statement claims a batch, at most a
merchant's free slots of it, never a notification twice (on PostgreSQL two claimers do not even
wait for each other: FOR UPDATE SKIP LOCKED); outcomes are recorded in a few statements per
batch, a bad one failing alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from paygrid.kernel.clock import utcnow
from paygrid.notify.delivery import Outcome
from paygrid.notify.domain import MAX_IN_FLIGHT_PER_MERCHANT
from paygrid.notify.store import (
    CLAIM_LEASE_S,
    BatchWriter,
    Result,
    claim_due,
    record_results,
    unclaim,
)
from paygrid.storage.database import Database
from paygrid.storage.schema import notification_attempts, notifications

OK = Outcome(200, None, None, 3)
FAILED = Outcome(500, "http_status_500", None, 4)


@pytest.fixture
def db(tmp_path: Path, database_url: str | None) -> Iterator[Database]:
    database = Database(database_url or f"sqlite:///{tmp_path / 'n.db'}")
    database.migrate()
    yield database
    database.dispose()


def _add(db: Database, mchid: str, n: int, now: datetime, prefix: str = "") -> list[str]:
    ids = [f"ntf_{prefix}{mchid}_{i:03d}" for i in range(n)]
    with db.transaction() as conn:
        conn.execute(
            insert(notifications),
            [
                {
                    "notify_id": nid,
                    "event_id": "evt_" + nid,
                    "mchid": mchid,
                    "event_type": "payment.succeeded",
                    "resource_id": "pay_" + nid,
                    "url": "http://127.0.0.1:9/notify",
                    "body": "{}",
                    "status": "PENDING",
                    "attempts": 0,
                    "next_attempt_at": now - timedelta(seconds=n - i),
                    "created_at": now,
                }
                for i, nid in enumerate(ids)
            ],
        )
    return ids


def _after(outcome: Outcome, status: str, attempts: int, manual: bool, now: datetime) -> Any:
    assert not outcome.ok
    if manual or status != "PENDING":
        return {}
    if attempts >= 2:
        return {"status": "FAILED", "next_attempt_at": None}
    return {"next_attempt_at": now + timedelta(seconds=15)}


class Statements:
    def __init__(self, db: Database) -> None:
        self.seen: list[str] = []
        event.listen(db.engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(("BEGIN", "SELECT 1")):
            self.seen.append(statement.split()[0])


def test_one_statement_claims_a_merchants_free_slots_oldest_first(db: Database) -> None:
    now = utcnow()
    a = _add(db, "A", 2 * MAX_IN_FLIGHT_PER_MERCHANT + 2, now)  # more than two rounds' slots
    b = _add(db, "B", 2, now)
    counted = Statements(db)
    with db.transaction() as conn:
        first = claim_due(conn, now, busy_ids=[], taken={"A": 1}, limit=50)
    assert counted.seen == ["UPDATE"]
    got = sorted(c.notify_id for c in first)
    assert got == sorted(a[: MAX_IN_FLIGHT_PER_MERCHANT - 1] + b)  # A holds one slot already
    with db.transaction() as conn:  # leased: not due again; A's next ones are
        second = claim_due(conn, now, busy_ids=[], taken={}, limit=50)
        took = MAX_IN_FLIGHT_PER_MERCHANT - 1
        assert sorted(c.notify_id for c in second) == a[took : took + MAX_IN_FLIGHT_PER_MERCHANT]
        full = claim_due(conn, now, busy_ids=[], taken={"A": MAX_IN_FLIGHT_PER_MERCHANT}, limit=9)
        assert full == []
        lease = conn.execute(
            select(notifications.c.next_attempt_at).where(notifications.c.notify_id == a[0])
        ).scalar_one()
    assert abs((lease - now).total_seconds() - CLAIM_LEASE_S) < 1
    with db.transaction() as conn:
        unclaim(conn, [a[0]], now)
        again = claim_due(conn, now, busy_ids=[], taken={}, limit=50)
    rest = a[took + MAX_IN_FLIGHT_PER_MERCHANT :]
    assert sorted(c.notify_id for c in again) == [a[0], *rest]  # given back, and the rest


def test_busy_notifications_and_the_limit_are_respected(db: Database) -> None:
    now = utcnow()
    ids = [*_add(db, "A", 3, now), *_add(db, "B", 3, now), *_add(db, "C", 3, now)]
    with db.transaction() as conn:
        claimed = claim_due(conn, now, busy_ids=ids[:2], taken={}, limit=5)
    got = {c.notify_id for c in claimed}
    assert len(got) == 5 and not got & set(ids[:2])


def test_two_claimers_never_share_a_notification_nor_wait(db: Database) -> None:
    now = utcnow()
    for m in "ABCDEFGH":
        _add(db, m, 8, now)
    if db.is_sqlite:  # one writer at a time: the second claim sees the first's leases
        with db.transaction() as conn:
            one = claim_due(conn, now, [], {}, 20)
        with db.transaction() as conn:
            two = claim_due(conn, now, [], {}, 20)
        assert len(one) == 20 and len(two) == 20  # slots are per notifier (copy)
        assert not {c.notify_id for c in one} & {c.notify_id for c in two}
        return
    first_holds = threading.Event()
    release = threading.Event()
    one_ids: list[str] = []

    def first() -> None:
        with db.transaction() as conn:
            one_ids.extend(c.notify_id for c in claim_due(conn, now, [], {}, 20))
            first_holds.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_holds.wait(30)
        with db.transaction() as conn:  # the first has not committed: its rows are locked
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            two_ids = [c.notify_id for c in claim_due(conn, now, [], {}, 64)]
    finally:
        release.set()
        thread.join(30)
    assert len(one_ids) == 20 and not set(one_ids) & set(two_ids)
    # between them every merchant's due ones, up to its slots (per claimer)
    assert len(set(one_ids) | set(two_ids)) == 8 * min(8, MAX_IN_FLIGHT_PER_MERCHANT)


def test_a_batch_of_outcomes_is_recorded_in_a_few_statements(db: Database) -> None:
    now = utcnow()
    ok_ids = _add(db, "A", 5, now)
    bad = _add(db, "B", 2, now)
    counted = Statements(db)
    with db.transaction() as conn:
        recorded = record_results(conn, [Result(i, OK, False) for i in ok_ids], now, _after)
    assert counted.seen == ["UPDATE", "INSERT"]  # delivered + attempt numbers; the attempts
    assert sorted((r.result.notify_id, r.attempt_no) for r in recorded) == [(i, 1) for i in ok_ids]
    results = [
        Result(bad[0], FAILED, False),
        Result(bad[0], FAILED, True),  # a resend ending beside the scheduled attempt
        Result(bad[1], FAILED, False),
        Result(bad[1], FAILED, False),
    ]
    with db.transaction() as conn:
        record_results(conn, results, now, _after)
    with db.read() as conn:
        rows = {r.notify_id: r for r in conn.execute(select(notifications)).all() if r.mchid == "B"}
        attempts = conn.execute(
            select(notification_attempts.c.notify_id, notification_attempts.c.attempt_no)
        ).all()
        delivered = conn.execute(
            select(notifications.c.status, notifications.c.delivered_at).where(
                notifications.c.mchid == "A"
            )
        ).all()
    assert len(delivered) == 5
    assert all(d.status == "DELIVERED" and d.delivered_at is not None for d in delivered)
    assert rows[bad[0]].attempts == 2 and rows[bad[0]].status == "PENDING"
    assert rows[bad[1]].attempts == 2 and rows[bad[1]].status == "FAILED"
    assert sorted(a.attempt_no for a in attempts if a.notify_id == bad[0]) == [1, 2]
    assert len(attempts) == 9


def test_a_bad_outcome_fails_alone_and_the_rest_are_recorded() -> None:
    written: list[list[str]] = []

    def write(batch: Any) -> None:
        ids = [r.notify_id for r in batch]
        if "bad" in ids:
            raise LookupError("bad")
        written.append(ids)

    writer = BatchWriter(write, max_batch=10)
    futures = [writer.put(Result(i, OK, False)) for i in ("a", "bad", "b")]
    for f, name in zip(futures, ("a", "bad", "b"), strict=True):
        if name == "bad":
            with pytest.raises(LookupError):
                f.result(10)
        else:
            assert f.result(10) is None
    assert sorted(i for ids in written for i in ids) == ["a", "b"]
    writer.close()
