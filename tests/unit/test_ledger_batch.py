"""The ledger consumer books a fetched batch of events in one transaction, on SQLite and on
PostgreSQL: few statements for the whole batch, redeliveries and duplicates booked once, a
failing event rolls the whole batch back, concurrent consumers never book twice, and the
balances (kept in shards) always equal the entries, as `paygrid check` proves."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update

from paygrid.bus.ports import Event
from paygrid.kernel.money import rate_fee
from paygrid.ledger import repository
from paygrid.ledger.domain import refund_fee_returned
from paygrid.ledger.handlers import CaptureNotBooked, FeeRates, LedgerConsumer
from paygrid.ops.check import run_checks
from paygrid.storage.database import Database
from paygrid.storage.schema import inbox, ledger_balances, ledger_entries, ledger_vouchers
from tests.ledger_events import paid, refunded

MERCHANT_PPM, CHANNEL_PPM = 6000, 2000
LEDGER_CHECKS = {"UNBALANCED_VOUCHER", "BAD_ENTRY_AMOUNT", "EMPTY_VOUCHER", "BALANCE_MISMATCH"}
LEDGER_CHECKS |= {"CAPTURE_DUPLICATE", "REFUND_VOUCHER_DUPLICATE", "TRIAL_BALANCE"}


class Rates:
    """The fee plans' ports, counting how often the merchant's rate is read."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def merchant(self, _conn: object, mchid: str) -> int:
        self.reads.append(mchid)
        return MERCHANT_PPM

    def ports(self) -> FeeRates:
        return FeeRates(self.merchant, lambda _ch: CHANNEL_PPM)


@pytest.fixture
def db(database_url: str | None, tmp_path: Path) -> Iterator[Database]:
    database = Database(database_url or f"sqlite:///{tmp_path / 'ledger.db'}")
    database.migrate()
    yield database
    database.engine.dispose()


def consumer(db: Database, rates: Rates | None = None) -> LedgerConsumer:
    return LedgerConsumer(db, (rates or Rates()).ports(), "Asia/Shanghai")


def ledger_violations(db: Database) -> list[str]:
    with db.read() as conn:
        found = run_checks(conn, timedelta(0))
    return [f"{v.code}: {v.detail}" for v in found if v.code in LEDGER_CHECKS]


def vouchers(db: Database) -> list[tuple[str, str]]:
    with db.read() as conn:
        rows = conn.execute(select(ledger_vouchers.c.kind, ledger_vouchers.c.business_ref))
        return sorted((r.kind, r.business_ref) for r in rows)


def booked_fee(db: Database, refund_id: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(ledger_entries.c.amount), 0))
                .join(ledger_vouchers, ledger_vouchers.c.voucher_id == ledger_entries.c.voucher_id)
                .where(
                    ledger_vouchers.c.business_ref == refund_id,
                    ledger_entries.c.account_code == "fee_income:CNY",
                )
            ).scalar_one()
        )


def ref(e: Event) -> str:
    return str(e.payload["refund"]["refund_id"] if "refund" in e.payload else e.aggregate_id)


class Statements:
    """Counts the statements sent to the database (an executemany is one)."""

    def __init__(self, db: Database) -> None:
        self.sql: list[str] = []
        event.listen(db.engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.sql.append(str(args[2]).split()[0])


def test_a_batch_is_booked_in_a_few_statements(db: Database) -> None:
    rates = Rates()
    ledger = consumer(db, rates)
    first = [paid(f"m{i}", 2_000) for i in range(3)]
    ledger(first)  # the accounts now exist and this process knows them
    captures = [paid(f"m{i % 3}", 1_000 + i) for i in range(60)]
    counted = Statements(db)
    ledger(captures)
    # inbox, vouchers, entries, balances (+ the shard's advisory lock on PostgreSQL), and the
    # merchant's rate once per merchant in the batch (m0, m1, m2): not per posting.
    writes = [s for s in counted.sql if s not in ("BEGIN", "COMMIT")]
    assert len(writes) == (5 if db.engine.dialect.name == "postgresql" else 4), counted.sql
    assert sorted(rates.reads) == ["m0", "m0", "m1", "m1", "m2", "m2"]
    assert len(vouchers(db)) == 63
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_entries)).scalar() == 63 * 5
        totals = repository.balances(conn, ["pending_clearing:wechatpay:CNY", "fee_income:CNY"])
    amounts = [2_000] * 3 + [1_000 + i for i in range(60)]
    fees = sum(rate_fee(a, MERCHANT_PPM) for a in amounts)
    costs = sum(rate_fee(a, CHANNEL_PPM) for a in amounts)
    assert totals["pending_clearing:wechatpay:CNY"] == (sum(amounts), costs)
    assert totals["fee_income:CNY"] == (0, fees)
    assert ledger_violations(db) == []


def test_refunds_after_their_capture_in_the_same_batch_return_the_fee_pro_rata(
    db: Database,
) -> None:
    whole, split = paid("m1", 10_000), paid("m1", 3_333)
    parts = [refunded(split, 1_111), refunded(split, 1_111), refunded(split, 1_111)]
    consumer(db)([whole, split, refunded(whole, 10_000), *parts])
    charged = rate_fee(3_333, MERCHANT_PPM)
    expected, returned = [], 0
    for i in range(3):
        fee = refund_fee_returned(charged, 3_333, 1_111 * i, returned, 1_111)
        expected.append(fee)
        returned += fee
    assert [booked_fee(db, ref(e)) for e in parts] == expected and returned == charged
    assert len(vouchers(db)) == 6
    assert ledger_violations(db) == []


def test_redeliveries_and_duplicates_are_booked_once(db: Database) -> None:
    a, b, c = paid("m1", 500), paid("m2", 600), paid("m1", 700)
    ledger = consumer(db)
    ledger([a, b, a])  # the same event twice in one batch
    ledger([b, c])  # b redelivered beside a new one
    again = Event("evt_other", a.event_type, a.aggregate_id, a.occurred_at, a.payload)
    ledger([again])  # another event for a payment already booked: nothing more
    refund = refunded(a, 200)
    ledger([refund, refund])
    ledger([refund])
    assert vouchers(db) == sorted(
        [("capture", ref(a)), ("capture", ref(b)), ("capture", ref(c)), ("refund", ref(refund))]
    )
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(inbox)).scalar() == 5
    assert ledger_violations(db) == []


def test_one_failing_event_rolls_the_whole_batch_back(db: Database) -> None:
    booked_later, orphan = paid("m1", 900), paid("m2", 800)
    early = refunded(orphan, 100)  # its capture is in no batch yet
    ledger = consumer(db)
    with pytest.raises(CaptureNotBooked):
        ledger([booked_later, early])
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(inbox)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(ledger_balances)).scalar() == 0
    assert vouchers(db) == []
    ledger([booked_later])  # the bus retries one at a time: the good one goes through
    with pytest.raises(CaptureNotBooked):
        ledger([early])  # and the poison one fails alone
    ledger([orphan, early])  # with its capture first, in the same batch, it is booked
    assert len(vouchers(db)) == 3
    assert ledger_violations(db) == []


def test_check_proves_the_balances_from_the_entries(db: Database) -> None:
    consumer(db)([paid("m1", 1_234), paid("m2", 4_321)])
    assert ledger_violations(db) == []
    with db.transaction() as conn:
        conn.execute(
            update(ledger_balances)
            .where(ledger_balances.c.code == "fee_income:CNY")
            .values(credit_total=ledger_balances.c.credit_total + 1)
        )
    assert [v.split(":")[0] for v in ledger_violations(db)] == ["BALANCE_MISMATCH"]
    with db.transaction() as conn:
        conn.execute(
            update(ledger_balances)
            .where(ledger_balances.c.code == "fee_income:CNY")
            .values(credit_total=ledger_balances.c.credit_total - 1)
        )
        conn.execute(text("UPDATE ledger_entries SET amount = amount + 1 WHERE direction = 'D'"))
    assert {v.split(":")[0] for v in ledger_violations(db)} == {
        "BALANCE_MISMATCH",
        "UNBALANCED_VOUCHER",
        "TRIAL_BALANCE",
    }


def test_concurrent_consumers_book_each_record_once(db: Database) -> None:
    """Four consumers, each on its own connections, are handed the same events in other batches
    and orders (a redelivery racing the first delivery): one voucher per record, and the
    balances equal the entries."""
    events = [paid(f"m{i % 5}", 100 + i) for i in range(120)]
    chunks = [
        [events[i : i + 10] for i in range(0, 120, 10)],
        [events[i : i + 7][::-1] for i in range(0, 120, 7)],
        [events[i : i + 12] for i in range(0, 120, 12)][::-1],
        [events[i : i + 5] for i in range(0, 120, 5)],
    ]
    errors: list[BaseException] = []

    def run(batches: list[list[Event]]) -> None:
        ledger = consumer(db)
        try:
            for batch in batches:
                ledger(batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert vouchers(db) == sorted(("capture", e.aggregate_id) for e in events)
    assert ledger_violations(db) == []


def test_an_existing_database_upgrades_with_its_totals(
    database_url: str | None, tmp_path: Path
) -> None:
    """Migration 0006 carries each account's totals over as its shard 0."""
    from alembic import command
    from alembic.config import Config

    from paygrid.storage.database import MIGRATIONS_DIR

    old = Database(database_url or f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    with old.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_accounts (code, name, kind, currency, debit_total, "
                "credit_total, created_at) VALUES ('fee_income:CNY', 'f', 'income', 'CNY', 7, 60,"
                " '2026-12-01 00:00:00'), ('channel_cost:wechatpay:CNY', 'c', 'expense', 'CNY',"
                " 20, 0, '2026-12-01 00:00:00')"
            )
        )
    old.migrate()
    with old.read() as conn:
        assert repository.balances(conn) == {
            "fee_income:CNY": (7, 60),
            "channel_cost:wechatpay:CNY": (20, 0),
        }
        columns = set(conn.execute(text("SELECT * FROM ledger_accounts LIMIT 0")).keys())
    assert "debit_total" not in columns and "credit_total" not in columns
    old.engine.dispose()
