"""The notifications table as the notifier's work queue (商户通知队列): due notifications are
claimed in one statement, and the results of attempts are recorded in batches.

**Claim.** One ``UPDATE … RETURNING`` leases the oldest due notifications for CLAIM_LEASE_S:
at most MAX_IN_FLIGHT_PER_MERCHANT of a merchant, counting those it already has in flight in
this notifier, none of a merchant whose slots are all taken. The ranking runs over every due
notification, so one merchant's backlog never crowds out the others. On PostgreSQL the chosen
rows are locked ``FOR UPDATE SKIP LOCKED``: copies of the notifier running side by side never
wait for one another and never lease one notification twice (the lease's conditions are checked
again on the locked row). On SQLite one writer at a time has the same effect. A notifier that
dies with attempts in flight leaves their leases to expire, and they are claimed again: delivery
is at least once.

**Record.** The outcomes of attempts that ended while the last batch was being written are
written together, in one transaction: the delivered ones in one ``UPDATE … RETURNING`` (their
attempt numbers) and the attempts in one multi-row ``INSERT``; the failed ones need one more
``UPDATE … RETURNING`` and their next attempt times in one executemany.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, case, func, insert, select, update

from paygrid.notify.delivery import Outcome
from paygrid.notify.domain import MAX_IN_FLIGHT_PER_MERCHANT
from paygrid.storage.schema import notification_attempts, notifications

log = logging.getLogger(__name__)
CLAIM_LEASE_S = 30  # a claimed notification is not picked again for this long
RECORD_BATCH = 200  # outcomes written in one transaction at most
STOP_WAIT_S = 30.0

N = notifications.c


@dataclass(frozen=True, slots=True)
class Claimed:
    notify_id: str
    mchid: str
    url: str
    body: str


@dataclass(frozen=True, slots=True)
class Result:
    """One attempt's outcome, to be recorded; ``manual``: a resend someone asked for."""

    notify_id: str
    outcome: Outcome
    manual: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    result: Result
    attempt_no: int
    status: str  # the notification's status before this attempt was recorded


# --- claim ------------------------------------------------------------------------------------
def _claim_statement(locking: bool) -> Any:
    """The claim, built once: every varying part is a parameter (the ids in flight, the full
    merchants, the merchants holding 1, 2, ... slots), so no call builds SQL again."""
    now: Any = bindparam("now")
    ranked = (
        select(
            N.notify_id,
            N.mchid,
            N.next_attempt_at,
            func.row_number()
            .over(partition_by=N.mchid, order_by=(N.next_attempt_at, N.notify_id))
            .label("rank"),
        )
        .where(
            N.status == "PENDING",
            N.next_attempt_at <= now,
            N.notify_id.not_in(bindparam("busy", expanding=True)),
            N.mchid.not_in(bindparam("full", expanding=True)),
        )
        .subquery()
    )
    already = case(
        *(
            (ranked.c.mchid.in_(bindparam(f"held{k}", expanding=True)), k)
            for k in range(1, MAX_IN_FLIGHT_PER_MERCHANT)
        ),
        else_=0,
    )
    chosen = (
        select(ranked.c.notify_id)
        .where(ranked.c.rank + already <= MAX_IN_FLIGHT_PER_MERCHANT)
        .order_by(ranked.c.next_attempt_at, ranked.c.notify_id)
        .limit(bindparam("limit", type_=Integer))
    )
    if locking:  # PostgreSQL: lock what this copy takes, skip what another copy is taking
        due = notifications.alias("due")
        chosen = (
            select(due.c.notify_id)
            .where(
                due.c.notify_id.in_(chosen),
                due.c.status == "PENDING",
                due.c.next_attempt_at <= now,
            )
            .with_for_update(skip_locked=True)
        )
    return (
        update(notifications)
        .where(N.notify_id.in_(chosen), N.status == "PENDING", N.next_attempt_at <= now)
        .values(next_attempt_at=bindparam("lease"))
        .returning(N.notify_id, N.mchid, N.url, N.body)
    )


_CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}


def claim_due(
    conn: Connection,
    now: datetime,
    busy_ids: Sequence[str],
    taken: Mapping[str, int],
    limit: int,
) -> list[Claimed]:
    """Lease up to ``limit`` due notifications to this notifier, in one statement.
    ``busy_ids``: in flight here; ``taken``: slots each merchant already holds here."""
    params: dict[str, Any] = {
        "now": now,
        "lease": now + timedelta(seconds=CLAIM_LEASE_S),
        "busy": list(busy_ids),
        "full": [m for m, k in taken.items() if k >= MAX_IN_FLIGHT_PER_MERCHANT],
        "limit": limit,
    }
    for held in range(1, MAX_IN_FLIGHT_PER_MERCHANT):
        params[f"held{held}"] = [m for m, k in taken.items() if k == held]
    rows = conn.execute(_CLAIM[conn.dialect.name == "postgresql"], params).all()
    return [Claimed(r.notify_id, r.mchid, r.url, r.body) for r in rows]


def unclaim(conn: Connection, notify_ids: Sequence[str], now: datetime) -> None:
    """Give back leases this notifier took but will not use (no free slot after all)."""
    conn.execute(
        update(notifications)
        .where(N.notify_id.in_(notify_ids), N.status == "PENDING")
        .values(next_attempt_at=now)
    )


# --- record -----------------------------------------------------------------------------------
After = Callable[[Outcome, str, int, bool, datetime], dict[str, Any]]
"""(outcome, status, attempts, manual, now) -> the columns to change after a failed attempt."""


def record_results(
    conn: Connection, results: Sequence[Result], now: datetime, after: After
) -> list[Recorded]:
    """Record attempts' outcomes, a notification at most once per round (a resend may end
    beside a scheduled attempt of the same notification)."""
    recorded: list[Recorded] = []
    pending = list(results)
    while pending:
        this_round: dict[str, Result] = {}
        leftover: list[Result] = []
        for r in pending:
            if r.notify_id in this_round:
                leftover.append(r)
            else:
                this_round[r.notify_id] = r
        recorded += _record_round(conn, list(this_round.values()), now, after)
        pending = leftover
    return recorded


_DELIVERED = (
    update(notifications)
    .where(N.notify_id.in_(bindparam("ids", expanding=True)))
    .values(
        attempts=N.attempts + 1,
        status="DELIVERED",
        delivered_at=bindparam("now"),
        next_attempt_at=None,
    )
    .returning(N.notify_id, N.attempts)
)
_FAILED = (
    update(notifications)
    .where(N.notify_id.in_(bindparam("ids", expanding=True)))
    .values(attempts=N.attempts + 1)
    .returning(N.notify_id, N.attempts, N.status)
)
_RESCHEDULE = (
    update(notifications)
    .where(N.notify_id == bindparam("b_id"))
    .values(status=bindparam("b_status"), next_attempt_at=bindparam("b_next"))
)
_ATTEMPT = insert(notification_attempts)


def _record_round(
    conn: Connection, results: Sequence[Result], now: datetime, after: After
) -> list[Recorded]:
    """An acknowledged attempt delivers the notification, whatever its status was; a failed
    one changes what ``after`` says (the next attempt time, or FAILED)."""
    done: list[Recorded] = []
    ok = {r.notify_id: r for r in results if r.outcome.ok}
    failed = {r.notify_id: r for r in results if not r.outcome.ok}
    if ok:
        rows = conn.execute(_DELIVERED, {"ids": list(ok), "now": now}).all()
        done += [Recorded(ok[r.notify_id], r.attempts, "DELIVERED") for r in rows]
    if failed:
        rows = conn.execute(_FAILED, {"ids": list(failed)}).all()
        changes: list[dict[str, Any]] = []
        for r in rows:
            result = failed[r.notify_id]
            done.append(Recorded(result, r.attempts, r.status))
            values = after(result.outcome, r.status, r.attempts, result.manual, now)
            if values:
                changes.append({"b_id": r.notify_id, "b_status": r.status, **_bound(values)})
        if changes:
            conn.execute(_RESCHEDULE, changes)
    if len(done) != len(results):
        missing = {r.notify_id for r in results} - {d.result.notify_id for d in done}
        raise LookupError(f"notifications not found: {sorted(missing)}")
    _insert_attempts(conn, done, now)
    return done


def _bound(values: Mapping[str, Any]) -> dict[str, Any]:
    """A failed attempt's changes as executemany parameters: a next attempt time, or none
    (with the status it ends in)."""
    assert set(values) <= {"status", "next_attempt_at"}, values
    bound = {"b_next": values.get("next_attempt_at")}
    if "status" in values:
        bound["b_status"] = values["status"]
    return bound


def _insert_attempts(conn: Connection, done: Sequence[Recorded], now: datetime) -> None:
    conn.execute(
        _ATTEMPT,
        [
            {
                "notify_id": d.result.notify_id,
                "attempt_no": d.attempt_no,
                "at": now,
                "http_status": d.result.outcome.status,
                "error": d.result.outcome.reason,
                "duration_ms": d.result.outcome.took_ms,
                "manual": d.result.manual,
            }
            for d in done
        ],
    )


# --- the writer -------------------------------------------------------------------------------
LINGER_S = 0.02  # how long a batch of results waits for more


class BatchWriter:
    """Writes what it is given in batches from a thread of its own: what arrives within
    ``LINGER_S`` of the first item, and whatever arrived while the last batch was being
    written, goes in one batch (one transaction for a burst of deliveries instead of one
    each, for a slot held ``LINGER_S`` longer). A failed batch is written again one item at
    a time, so one bad item fails alone."""

    def __init__(self, write: Callable[[Sequence[Result]], None], max_batch: int) -> None:
        self._write = write
        self._max = max_batch
        self._queue: queue.SimpleQueue[tuple[Result, concurrent.futures.Future[None]] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, item: Result) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="notify-record")
                self._thread.daemon = True
                self._thread.start()
        self._queue.put((item, future))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + LINGER_S
            while len(batch) < self._max:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            self._flush(batch)

    def _flush(self, batch: list[tuple[Result, concurrent.futures.Future[None]]]) -> None:
        try:
            self._write([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning("recording %d outcomes failed (%s): one at a time", len(batch), exc)
            for one in batch:
                self._flush([one])
            return
        for _, future in batch:
            future.set_result(None)

    def close(self) -> None:
        """Write what was given, then stop."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(STOP_WAIT_S)
