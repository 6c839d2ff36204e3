"""The bank sandbox's books in SQLite: the money credited to the reserve account and the days
whose statement is out. One connection under a lock; every write is one transaction."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

DB_FILE = "bank-sandbox.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS credits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    reference TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    value_date TEXT NOT NULL,
    payer_name TEXT NOT NULL,
    details TEXT NOT NULL,
    digest TEXT NOT NULL,
    booked_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS credits_by_day ON credits (account, value_date);
CREATE TABLE IF NOT EXISTS closed_days (day TEXT PRIMARY KEY, closed_at REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Credit:
    seq: int
    reference: str
    amount: int
    value_date: str
    payer_name: str
    details: str
    digest: str

    @property
    def bank_reference(self) -> str:
        return f"BK{self.seq:010d}"


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            data_dir / DB_FILE, check_same_thread=False, isolation_level=None
        )
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def credit(
        self,
        account: str,
        reference: str,
        amount: int,
        currency: str,
        value_date: str,
        payer_name: str,
        details: str,
        digest: str,
        now: float,
    ) -> tuple[Credit, bool]:
        """Book a credit once per reference: (the credit, whether it is new)."""
        with self._lock:
            found = self._by_reference(reference)
            if found is not None:
                return found, False
            self._db.execute(
                "INSERT INTO credits (reference, account, amount, currency, value_date,"
                " payer_name, details, digest, booked_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    reference,
                    account,
                    amount,
                    currency,
                    value_date,
                    payer_name,
                    details,
                    digest,
                    now,
                ),
            )
            booked = self._by_reference(reference)
            assert booked is not None
            return booked, True

    def _by_reference(self, reference: str) -> Credit | None:
        row = self._db.execute(
            "SELECT seq, reference, amount, value_date, payer_name, details, digest"
            " FROM credits WHERE reference = ?",
            (reference,),
        ).fetchone()
        return Credit(*row) if row else None

    def balance_before(self, account: str, day: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM credits WHERE account = ? AND value_date < ?",
                (account, day),
            ).fetchone()
        return int(row[0])

    def credits_on(self, account: str, day: str) -> list[Credit]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, reference, amount, value_date, payer_name, details, digest"
                " FROM credits WHERE account = ? AND value_date = ? ORDER BY seq",
                (account, day),
            ).fetchall()
        return [Credit(*row) for row in rows]

    def close_day(self, day: str, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO closed_days (day, closed_at) VALUES (?, ?)", (day, now)
            )

    def closed(self, day: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM closed_days WHERE day = ?", (day,)).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()
