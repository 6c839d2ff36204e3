"""Repository of 差错 cases (recon_cases and their append-only history, recon_case_steps).

A case row holds its current state for listing and a version for optimistic locking; its
history is only ever appended to. The case's domain object (:class:`paygrid.recon.cases.Case`)
is rebuilt from both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from paygrid.recon.cases import Case, CaseStatus, DifferenceKind, Step
from paygrid.storage.schema import recon_case_steps, recon_cases

MAX_LISTED = 10_000  # cases in one listing: a day's worth, not the archive


class CaseConflict(RuntimeError):
    """Another writer changed the case meanwhile: read it again."""


@dataclass(frozen=True, slots=True)
class StoredCase:
    case: Case
    reference: str  # what it is about (results.reference)
    difference: dict[str, Any]  # the difference as the run that opened it reported it
    version: int


def load(conn: Connection, case_id: str) -> StoredCase | None:
    row = conn.execute(select(recon_cases).where(recon_cases.c.case_id == case_id)).first()
    return None if row is None else _stored(row, _steps(conn, [case_id])[case_id])


def of_date(conn: Connection, channel: str, day: date) -> dict[tuple[str, str], StoredCase]:
    """Every case of a channel's date, by (kind, reference)."""
    rows = conn.execute(
        select(recon_cases).where(
            recon_cases.c.channel == channel, recon_cases.c.business_date == day.isoformat()
        )
    ).all()
    steps = _steps(conn, [r.case_id for r in rows])
    return {(r.kind, r.reference): _stored(r, steps[r.case_id]) for r in rows}


def insert_case(
    conn: Connection, case: Case, reference: str, difference: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        insert(recon_cases).values(
            case_id=case.case_id,
            channel=case.channel,
            business_date=case.business_date,
            kind=str(case.kind),
            reference=reference,
            status=str(case.status),
            amount=case.amount,
            currency=case.currency,
            difference=json.dumps(difference, ensure_ascii=False, sort_keys=True),
            opened_at=case.history[0].at,
            updated_at=now,
            version=1,
        )
    )
    _append(conn, case.case_id, case.history, 0)


def save(conn: Connection, before: StoredCase, after: Case, now: datetime) -> None:
    """The case's new state and the steps it gained; CaseConflict if it moved meanwhile."""
    start = len(before.case.history)
    assert after.history[:start] == before.case.history, "history is append-only"
    changed = conn.execute(
        update(recon_cases)
        .where(
            and_(
                recon_cases.c.case_id == after.case_id,
                recon_cases.c.version == before.version,
            )
        )
        .values(status=str(after.status), updated_at=now, version=before.version + 1)
    )
    if changed.rowcount != 1:
        raise CaseConflict(f"case {after.case_id} changed meanwhile: try again")
    _append(conn, after.case_id, after.history[start:], start)


def listing(
    conn: Connection, day: date | None = None, status: CaseStatus | None = None
) -> list[StoredCase]:
    """Cases, oldest first: of a business date, in a state, or all (bounded)."""
    query = select(recon_cases).order_by(recon_cases.c.business_date, recon_cases.c.opened_at)
    if day is not None:
        query = query.where(recon_cases.c.business_date == day.isoformat())
    if status is not None:
        query = query.where(recon_cases.c.status == str(status))
    rows = conn.execute(query.limit(MAX_LISTED)).all()
    steps = _steps(conn, [r.case_id for r in rows])
    return [_stored(r, steps[r.case_id]) for r in rows]


def _append(conn: Connection, case_id: str, steps: tuple[Step, ...], start: int) -> None:
    if steps:
        conn.execute(
            insert(recon_case_steps),
            [
                {
                    "case_id": case_id,
                    "seq": start + i,
                    "at": s.at,
                    "status": str(s.status),
                    "actor": s.by,
                    "reason": s.reason,
                    "voucher_id": s.voucher_id,
                }
                for i, s in enumerate(steps)
            ],
        )


def _steps(conn: Connection, case_ids: list[str]) -> dict[str, list[Step]]:
    found: dict[str, list[Step]] = {case_id: [] for case_id in case_ids}
    for chunk in (case_ids[i : i + 500] for i in range(0, len(case_ids), 500)):
        rows = conn.execute(
            select(recon_case_steps)
            .where(recon_case_steps.c.case_id.in_(chunk))
            .order_by(recon_case_steps.c.case_id, recon_case_steps.c.seq)
        )
        for r in rows:
            step = Step(r.at, CaseStatus(r.status), r.actor, r.reason, r.voucher_id)
            found[r.case_id].append(step)
    return found


def _stored(row: Any, steps: list[Step]) -> StoredCase:
    case = Case(
        row.case_id,
        DifferenceKind(row.kind),
        row.channel,
        row.business_date,
        int(row.amount),
        row.currency,
        CaseStatus(row.status),
        tuple(steps),
    )
    return StoredCase(case, row.reference, json.loads(row.difference), int(row.version))
