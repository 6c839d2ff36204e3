"""Reconciliation as a job (application service): one run at a time per channel and business
date, its result stored, its differences made 差错 cases, and a person's resolution of a case.

- **One wins.** A run first takes the (channel, date) lock in ``recon_locks`` with a lease its
  heartbeat renews. A second run of the same channel and date meanwhile waits for the first and
  returns its stored result. A killed run's lease runs out; the next run takes over.
- **Same result again.** A run's differences are a function of what is stored (bills, records,
  vouchers; a repaired record keeps reporting ``STATUS_REPAIRED``), so a run repeated, or
  restarted after a crash, reports the same; its cases are found again by (kind, reference).
- **Cases.** A new difference opens a case; one repaired in the run is auto-resolved at once.
  An open case whose difference a later run no longer finds is auto-resolved by its rule
  (late arrival, cross-day, repaired). Cases, their history and the run's stored result commit
  in one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.ledger import repository as ledger_repository
from paygrid.ledger.domain import case_voucher, pending_clearing, reserve_bank
from paygrid.recon import case_store
from paygrid.recon.cases import (
    Action,
    AutoRule,
    Case,
    CaseRefused,
    CaseStatus,
    DifferenceKind,
    case_amount,
    open_case,
    rule_when_gone,
)
from paygrid.recon.results import JSON_FIELDS, ChannelResult, Difference, reference
from paygrid.storage.database import Database, insert_ignoring_duplicates
from paygrid.storage.schema import recon_locks, recon_runs

log = logging.getLogger("paygrid.recon")

LEASE = timedelta(seconds=60)  # a run's hold on its channel and date, renewed by its heartbeat
WAIT_LIMIT = timedelta(minutes=30)  # how long a second run waits for the first
POLL_S = 0.5
BANK = "bank"  # the reserve account's own results (BANK_ONLY): its books are the reserve bank
RunFn = Callable[[], ChannelResult]


class Busy(RuntimeError):
    """Another run of this channel and date did not finish within the wait."""


class CaseNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ChannelResult  # its differences name their cases
    run_id: str
    waited: bool  # another run of the same channel and date ran; this is its result


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def reconcile(
    db: Database,
    channel: str,
    day: date,
    run: RunFn,
    *,
    by: str,
    lease: timedelta = LEASE,
    wait: timedelta = WAIT_LIMIT,
) -> Outcome:
    """Run ``run`` for ``channel``'s ``day`` under its lock and record it; or, when another run
    holds the lock, wait for it and return its result."""
    me, asked = holder_name(), utcnow()
    deadline = time.monotonic() + wait.total_seconds()
    waited = False
    while not claim(db, channel, day, me, lease):
        waited = True
        if time.monotonic() > deadline:
            raise Busy(f"{channel} {day}: another run holds it; try again later")
        time.sleep(POLL_S)
        done = latest_run(db, channel, day, finished_after=asked)
        if done is not None and not _held(db, channel, day):  # the other run finished
            return Outcome(done[1], done[0], waited=True)
    done = latest_run(db, channel, day, finished_after=asked) if waited else None
    if done is not None:  # it finished between our last look and our claim
        release(db, channel, day, me)
        return Outcome(done[1], done[0], waited=True)
    beat = _Heartbeat(db, channel, day, me, lease)
    beat.start()
    try:
        started = utcnow()
        result = run()
        run_id = new_id("rrun")
        with db.transaction() as conn:
            named = _record_cases(conn, channel, day, result, run_id, utcnow())
            _store_run(conn, run_id, channel, day, by, started, named)
        return Outcome(named, run_id, waited=False)
    finally:
        beat.stop()
        release(db, channel, day, me)


def claim(db: Database, channel: str, day: date, holder: str, lease: timedelta) -> bool:
    """Take the lock when free, expired, or already ours."""
    now, key = utcnow(), (channel, day.isoformat())
    with db.transaction() as conn:
        conn.execute(
            insert_ignoring_duplicates(conn, recon_locks),
            [{"channel": key[0], "business_date": key[1], "holder": None, "lease_until": now}],
        )
        taken = conn.execute(
            update(recon_locks)
            .where(
                _lock(*key),
                or_(
                    recon_locks.c.holder.is_(None),
                    recon_locks.c.lease_until < now,
                    recon_locks.c.holder == holder,
                ),
            )
            .values(holder=holder, lease_until=now + lease)
        )
        return taken.rowcount == 1


def release(db: Database, channel: str, day: date, holder: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            update(recon_locks)
            .where(_lock(channel, day.isoformat()), recon_locks.c.holder == holder)
            .values(holder=None)
        )


def _held(db: Database, channel: str, day: date) -> bool:
    with db.read() as conn:
        row = conn.execute(
            select(recon_locks.c.holder, recon_locks.c.lease_until).where(
                _lock(channel, day.isoformat())
            )
        ).first()
    return row is not None and row.holder is not None and row.lease_until >= utcnow()


def _lock(channel: str, day: str) -> Any:
    return and_(recon_locks.c.channel == channel, recon_locks.c.business_date == day)


class _Heartbeat(threading.Thread):
    """Renews the lease while the run works (a long day takes minutes)."""

    def __init__(self, db: Database, channel: str, day: date, me: str, lease: timedelta):
        super().__init__(name=f"recon-lease-{channel}-{day}", daemon=True)
        self._args = (db, channel, day, me, lease)
        self._stop_beat = threading.Event()

    def run(self) -> None:
        period = self._args[4].total_seconds() / 4
        while not self._stop_beat.wait(period):
            try:
                if not claim(*self._args):
                    log.error("recon %s %s: lost its lease", self._args[1], self._args[2])
            except Exception:
                log.exception("recon lease renewal failed")

    def stop(self) -> None:
        self._stop_beat.set()
        self.join(timeout=5)


# --- results and cases ----------------------------------------------------------------------
def latest_run(
    db: Database, channel: str, day: date, finished_after: datetime | None = None
) -> tuple[str, ChannelResult] | None:
    """The stored result of the last finished run of a channel's date."""
    query = (
        select(recon_runs.c.run_id, recon_runs.c.result)
        .where(recon_runs.c.channel == channel, recon_runs.c.business_date == day.isoformat())
        .order_by(recon_runs.c.finished_at.desc())
        .limit(1)
    )
    if finished_after is not None:
        query = query.where(recon_runs.c.finished_at >= finished_after)
    with db.read() as conn:
        row = conn.execute(query).first()
    return None if row is None else (row.run_id, result_from_json(json.loads(row.result)))


def result_from_json(doc: dict[str, Any]) -> ChannelResult:
    def difference(d: dict[str, Any]) -> Difference:
        fields: dict[str, Any] = {k: d.get(k) for k in JSON_FIELDS}
        fields["flow"] = fields["flow"] or "PAYMENT"
        return Difference(**fields)

    return ChannelResult(
        doc["channel"],
        int(doc["matched"]["count"]),
        int(doc["matched"]["amount"]),
        tuple(difference(d) for d in doc["differences"]),
        tuple(difference(d) for d in doc["held"]),
    )


def _record_cases(
    conn: Connection, channel: str, day: date, result: ChannelResult, run_id: str, now: datetime
) -> ChannelResult:
    existing = case_store.of_date(conn, channel, day)
    case_ids: dict[tuple[str, str], str] = {}
    for d in result.differences:
        key = (d.kind, reference(d))
        stored = existing.get(key)
        if key in case_ids:
            continue
        if stored is None:
            case = _opened(d, channel, day, run_id, now)
            case_store.insert_case(conn, case, key[1], _as_doc(d), now)
            case_ids[key] = case.case_id
            continue
        if stored.case.status == CaseStatus.OPEN and d.repaired:
            case_store.save(conn, stored, _repaired(stored.case, now), now)
        case_ids[key] = stored.case.case_id
    for key, stored in existing.items():
        if key in case_ids or stored.case.status != CaseStatus.OPEN:
            continue
        cross = stored.difference.get("payment_id") in result.cross_day
        rule = rule_when_gone(stored.case.kind, cross)
        gone = stored.case.auto_resolve(rule, now, f"not found again by run {run_id}")
        case_store.save(conn, stored, gone, now)
    return result.with_cases(case_ids)


def _opened(d: Difference, channel: str, day: date, run_id: str, now: datetime) -> Case:
    kind = DifferenceKind(d.kind)
    amount = case_amount(
        kind,
        d.flow == "REFUND",
        d.paygrid_amount,
        d.channel_amount,
        d.booked_amount,
        d.expected_fee,
        d.channel_fee,
    )
    case = open_case(
        new_id("case"), kind, channel, day.isoformat(), amount, d.currency, now, f"run {run_id}"
    )
    return _repaired(case, now) if d.repaired else case


def _repaired(case: Case, now: datetime) -> Case:
    return case.auto_resolve(AutoRule.STATUS_REPAIRED, now, "the channel's success was applied")


def _as_doc(d: Difference) -> dict[str, Any]:
    return {k: getattr(d, k) for k in JSON_FIELDS if k != "case_id"}


def _store_run(
    conn: Connection,
    run_id: str,
    channel: str,
    day: date,
    by: str,
    started: datetime,
    result: ChannelResult,
) -> None:
    conn.execute(
        recon_runs.insert().values(
            run_id=run_id,
            channel=channel,
            business_date=day.isoformat(),
            run_by=by[:64],
            started_at=started,
            finished_at=utcnow(),
            matched_count=result.matched_count,
            matched_amount=result.matched_amount,
            differences=len(result.differences),
            held=len(result.held),
            result=json.dumps(result.as_json(), ensure_ascii=False),
        )
    )


# --- a person resolves a case ---------------------------------------------------------------
def resolve_case(
    db: Database, case_id: str, action: Action, reason: str, by: str, zone: str, cell: int = 0
) -> Case:
    """Adjust or write off an open case: its voucher and its new state in one transaction."""
    now = utcnow()
    with db.transaction() as conn:
        stored = case_store.load(conn, case_id)
        if stored is None:
            raise CaseNotFound(f"no case {case_id}")
        case = stored.case
        if case.status != CaseStatus.OPEN:
            raise CaseRefused(f"case {case_id} is {case.status}, not OPEN: nothing to resolve")
        voucher_id = None
        if case.amount != 0:
            books = (
                reserve_bank(case.currency)
                if case.channel == BANK
                else pending_clearing(case.channel, case.currency)
            )
            memo = f"{action} {case.kind} {case.channel} {case.business_date} by {by}: {reason}"
            voucher = case_voucher(
                case_id, action == Action.WRITE_OFF, books, case.amount, memo[:250]
            )
            voucher_id = ledger_repository.post(conn, voucher, now, now, zone, cell)
            assert voucher_id is not None, f"case {case_id} was resolved before"
        resolved = case.resolve(action, reason, by, now, voucher_id)
        case_store.save(conn, stored, resolved, now)
    return resolved
