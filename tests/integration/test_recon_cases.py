"""Recon as a job and its 差错 cases, on real SQLite and real PostgreSQL: one run of a
channel's date at a time (the second returns the first's result), a killed run taken over once
its lease runs out, cases opened once, auto-resolved by their rules, and resolved by a person
with a balanced voucher and the whole history kept."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from paygrid.kernel.clock import utcnow
from paygrid.ledger.domain import case_voucher, pending_clearing
from paygrid.ledger.repository import post
from paygrid.ops.check import check_database
from paygrid.recon import case_store
from paygrid.recon.cases import Action, CaseRefused, CaseStatus
from paygrid.recon.results import ChannelResult, Difference
from paygrid.recon.service import claim, latest_run, reconcile, resolve_case
from paygrid.storage.database import Database
from tests.support import PostgresServer, pg_bin

DAY = date(2026, 11, 30)
CHANNEL = "wechatpay"
LONG = Difference("CHANNEL_ONLY", None, None, None, None, "4200001", None, 1_000)
MISSING = Difference("SETTLEMENT_MISSING", None, None, None, None, "WX20261130", 9_980, None)
REPAIRED = Difference(
    "STATUS_REPAIRED", "pay_1", "o1", None, None, "4200002", 500, 500, repaired=True
)
SHORT_REFUND = Difference(
    "PAYGRID_ONLY", "pay_2", "o2", "rfd_2", "or2", None, 300, None, flow="REFUND"
)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'paygrid.db'}"
    else:
        if pg_bin() is None:
            pytest.skip("no PostgreSQL here")
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database("recon_" + uuid.uuid4().hex[:8])
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


def _result(*differences: Difference) -> ChannelResult:
    return ChannelResult(CHANNEL, 3, 30_000, differences, ())


def test_one_run_of_a_date_at_a_time_the_second_gets_its_result(db: Database) -> None:
    calls: list[int] = []

    def slow() -> ChannelResult:
        calls.append(1)
        time.sleep(1.5)
        return _result(LONG)

    outcomes = []

    def go() -> None:
        outcomes.append(reconcile(db, CHANNEL, DAY, slow, by="test"))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1  # one wins
    assert sorted(o.waited for o in outcomes) == [False, True]
    assert outcomes[0].result == outcomes[1].result and outcomes[0].run_id == outcomes[1].run_id
    assert outcomes[0].result.differences[0].case_id


def test_a_killed_run_is_taken_over_when_its_lease_runs_out(db: Database) -> None:
    assert claim(db, CHANNEL, DAY, "killed-host:1:1", timedelta(seconds=1))  # then it died
    started = time.monotonic()
    outcome = reconcile(db, CHANNEL, DAY, lambda: _result(LONG), by="test")
    assert not outcome.waited and time.monotonic() - started >= 0.5
    stored = latest_run(db, CHANNEL, DAY)
    assert stored is not None and stored[1] == outcome.result


def test_cases_open_once_resolve_by_rule_and_by_a_person(db: Database) -> None:
    first = reconcile(
        db, CHANNEL, DAY, lambda: _result(LONG, MISSING, REPAIRED, SHORT_REFUND), by="t"
    )
    again = reconcile(
        db, CHANNEL, DAY, lambda: _result(LONG, MISSING, REPAIRED, SHORT_REFUND), by="t"
    )
    assert again.result == first.result  # the same cases, found again by kind and reference
    with db.read() as conn:
        cases = {c.case.kind: c.case for c in case_store.listing(conn, DAY)}
    assert len(cases) == 4
    assert cases["STATUS_REPAIRED"].status == CaseStatus.CLOSED  # repaired in the run itself
    assert cases["STATUS_REPAIRED"].resolution == CaseStatus.AUTO_RESOLVED
    assert cases["CHANNEL_ONLY"].amount == 1_000  # 长款: the books lack it
    assert cases["SETTLEMENT_MISSING"].amount == -9_980  # the money owed did not arrive
    assert cases["PAYGRID_ONLY"].amount == 300  # a refund the channel never paid out: ours still

    # the transfer arrives: the next run no longer finds it, the case resolves itself
    reconcile(db, CHANNEL, DAY, lambda: _result(LONG, REPAIRED, SHORT_REFUND), by="t")
    with db.read() as conn:
        late = case_store.load(conn, cases["SETTLEMENT_MISSING"].case_id)
    assert late is not None and late.case.status == CaseStatus.CLOSED
    assert "LATE_ARRIVAL" in late.case.history[1].reason

    longer = cases["CHANNEL_ONLY"]
    done = resolve_case(db, longer.case_id, Action.ADJUST, "merchant's order found", "li.na", "UTC")
    assert [s.status for s in done.history] == ["OPEN", "ADJUSTED", "CLOSED"]
    assert done.history[1].by == "li.na" and done.history[1].reason == "merchant's order found"
    assert _entries(db, longer.case_id) == [
        (f"pending_clearing:{CHANNEL}:CNY", "D", 1_000),
        ("recon_suspense:CNY", "C", 1_000),
    ]
    with pytest.raises(CaseRefused):  # closed: nothing is resolved twice
        resolve_case(db, longer.case_id, Action.WRITE_OFF, "again", "li.na", "UTC")

    refund = cases["PAYGRID_ONLY"]
    resolve_case(db, refund.case_id, Action.WRITE_OFF, "channel confirms it", "wang", "UTC")
    assert _entries(db, refund.case_id) == [
        (f"pending_clearing:{CHANNEL}:CNY", "D", 300),
        ("recon_write_off:CNY", "C", 300),
    ]
    with pytest.raises(CaseRefused):  # a repaired status has nothing to post
        resolve_case(db, cases["STATUS_REPAIRED"].case_id, Action.ADJUST, "x", "wang", "UTC")
    with pytest.raises(CaseRefused):  # a reason is required; nothing is posted without one
        resolve_case(db, cases["SETTLEMENT_MISSING"].case_id, Action.ADJUST, " ", "wang", "UTC")

    # every case voucher belongs to its case; one that does not is named by `paygrid check`
    assert not [v for v in check_database(db, timedelta(0)) if v.code.startswith("CASE_")]
    books = pending_clearing(CHANNEL, "CNY")
    stray = case_voucher("case_nobody", False, books, 5, "posted by hand")
    with db.transaction() as conn:
        post(conn, stray, utcnow(), utcnow(), "UTC")
    found = [v.code for v in check_database(db, timedelta(0))]
    assert "CASE_VOUCHER_WITHOUT_CASE" in found

    # runs after the resolution keep naming the (closed) case, and open no new one
    later = reconcile(db, CHANNEL, DAY, lambda: _result(LONG, REPAIRED, SHORT_REFUND), by="t")
    assert {d.case_id for d in later.result.differences} <= {c.case_id for c in cases.values()}


def _entries(db: Database, case_id: str) -> list[tuple[str, str, int]]:
    query = text(
        "SELECT e.account_code, e.direction, e.amount FROM ledger_entries e "
        "JOIN ledger_vouchers v ON v.voucher_id = e.voucher_id "
        "WHERE v.business_ref = :case ORDER BY e.direction DESC, e.account_code"
    )
    with db.read() as conn:
        return [(r[0], r[1], int(r[2])) for r in conn.execute(query, {"case": case_id})]
