"""Sandbox state in SQLite under the data directory: consumes, refunds and revokes, the
notifications to send, closed days and knobs.

One connection guarded by a re-entrant lock, so the web server and the notification thread
share it; ``transaction()`` makes a read-modify-write atomic.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DB_FILE = "unionpay-sandbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consumes (
    mer_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    txn_time TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel_type TEXT NOT NULL,
    amount INTEGER NOT NULL,
    back_url TEXT NOT NULL,
    front_url TEXT NOT NULL,
    iss_ins_code TEXT NOT NULL,
    pay_timeout REAL NOT NULL,
    request_digest TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    query_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    result_code TEXT NOT NULL,
    trace_no TEXT NOT NULL,
    acc_no TEXT NOT NULL,
    requested_at REAL NOT NULL,
    paid_at REAL,
    refunded INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (mer_id, order_id, txn_time)
);
CREATE INDEX IF NOT EXISTS consumes_paid ON consumes (mer_id, paid_at);
CREATE TABLE IF NOT EXISTS backs (
    mer_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    txn_time TEXT NOT NULL,
    txn_type TEXT NOT NULL,
    orig_query_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    back_url TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    query_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    trace_no TEXT NOT NULL,
    fee_returned INTEGER NOT NULL,
    done_at REAL NOT NULL,
    PRIMARY KEY (mer_id, order_id, txn_time)
);
CREATE INDEX IF NOT EXISTS backs_day ON backs (mer_id, done_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    txn_type TEXT NOT NULL,
    query_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at);
CREATE TABLE IF NOT EXISTS closed_days (day TEXT PRIMARY KEY, closed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Consume:
    """A consume (消费). ``status`` UNPAID (issued, or posted by the browser), PAID, FAILED
    (the payer's bank declined: final). ``result_code`` is what a query says of it."""

    mer_id: str
    order_id: str
    txn_time: str
    kind: str  # front | qr
    channel_type: str
    amount: int  # fen
    back_url: str
    front_url: str
    iss_ins_code: str
    pay_timeout: float  # no payment after this time
    request_digest: str  # the same orderId + txnTime must come with the same order
    token: str  # the pay page's and the QR code's address
    query_id: str
    status: str
    result_code: str
    trace_no: str
    acc_no: str  # the payer's card, masked
    requested_at: float
    paid_at: float | None
    refunded: int  # fen given back so far (refunds and revokes)
    fee: int  # 商户手续费 charged at payment, fen
    updated_at: float

    def with_changes(self, **changes: Any) -> Consume:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Back:
    """A back-end transaction on a consume: a refund (退货 04) or a revoke (撤销 31)."""

    mer_id: str
    order_id: str
    txn_time: str
    txn_type: str
    orig_query_id: str
    amount: int
    back_url: str
    request_digest: str
    query_id: str
    status: str  # SUCCESS (done when answered)
    trace_no: str
    fee_returned: int
    done_at: float


@dataclass(frozen=True, slots=True)
class Notification:
    """One delivery of a notification (后台通知): a row per copy (a duplicate is a second)."""

    id: int
    order_id: str
    txn_type: str
    query_id: str
    url: str
    body: bytes  # the signed form, URL-encoded
    state: str  # HELD | PENDING | DELIVERED | FAILED | DROPPED
    attempts: int
    next_at: float
    created_at: float
    last_status: int | None
    last_error: str | None


_CONSUME = tuple(f.name for f in fields(Consume))
_BACK = tuple(f.name for f in fields(Back))
_NOTIFY = tuple(f.name for f in fields(Notification))


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            data_dir / DB_FILE, check_same_thread=False, isolation_level=None, timeout=10
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._db.in_transaction:  # nested: the outer one commits
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def _insert(self, table: str, columns: tuple[str, ...], row: object) -> None:
        marks = ", ".join("?" for _ in columns)
        self._run(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            tuple(getattr(row, c) for c in columns),
        )

    # --- settings and closed days -----------------------------------------------------------

    def get_setting(self, name: str) -> Any:
        rows = self._all("SELECT value FROM settings WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def put_setting(self, name: str, value: object) -> None:
        self._run(
            "INSERT INTO settings (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )

    def close_day(self, day: str, now: float) -> float:
        self._run("INSERT OR IGNORE INTO closed_days (day, closed_at) VALUES (?, ?)", (day, now))
        return float(self._all("SELECT closed_at FROM closed_days WHERE day = ?", (day,))[0][0])

    def day_closed_at(self, day: str) -> float | None:
        rows = self._all("SELECT closed_at FROM closed_days WHERE day = ?", (day,))
        return float(rows[0][0]) if rows else None

    # --- consumes ---------------------------------------------------------------------------

    def _consumes(self, where: str, params: tuple[object, ...]) -> list[Consume]:
        rows = self._all(f"SELECT {', '.join(_CONSUME)} FROM consumes WHERE {where}", params)
        return [Consume(*row) for row in rows]

    def get_consume(self, mer_id: str, order_id: str, txn_time: str) -> Consume | None:
        found = self._consumes(
            "mer_id = ? AND order_id = ? AND txn_time = ?", (mer_id, order_id, txn_time)
        )
        return found[0] if found else None

    def consume_by(self, column: str, value: str) -> Consume | None:
        assert column in ("token", "query_id")
        found = self._consumes(f"{column} = ?", (value,))
        return found[0] if found else None

    def insert_consume(self, consume: Consume) -> None:
        self._insert("consumes", _CONSUME, consume)

    def update_consume(self, c: Consume) -> None:
        changing = [n for n in _CONSUME if n not in ("mer_id", "order_id", "txn_time")]
        self._run(
            f"UPDATE consumes SET {', '.join(f'{n} = ?' for n in changing)} "
            "WHERE mer_id = ? AND order_id = ? AND txn_time = ?",
            (*(getattr(c, n) for n in changing), c.mer_id, c.order_id, c.txn_time),
        )

    def paid_between(self, mer_id: str, start: float, end: float) -> list[Consume]:
        return self._consumes(
            "mer_id = ? AND paid_at >= ? AND paid_at < ? ORDER BY paid_at", (mer_id, start, end)
        )

    def list_consumes(self, limit: int) -> list[Consume]:
        return self._consumes("1 = 1 ORDER BY requested_at DESC LIMIT ?", (limit,))

    # --- refunds and revokes ----------------------------------------------------------------

    def _backs(self, where: str, params: tuple[object, ...]) -> list[Back]:
        rows = self._all(f"SELECT {', '.join(_BACK)} FROM backs WHERE {where}", params)
        return [Back(*row) for row in rows]

    def get_back(self, mer_id: str, order_id: str, txn_time: str) -> Back | None:
        found = self._backs(
            "mer_id = ? AND order_id = ? AND txn_time = ?", (mer_id, order_id, txn_time)
        )
        return found[0] if found else None

    def insert_back(self, back: Back) -> None:
        self._insert("backs", _BACK, back)

    def backs_between(self, mer_id: str, start: float, end: float) -> list[Back]:
        return self._backs(
            "mer_id = ? AND done_at >= ? AND done_at < ? ORDER BY done_at", (mer_id, start, end)
        )

    def list_backs(self, limit: int) -> list[Back]:
        return self._backs("1 = 1 ORDER BY done_at DESC, order_id LIMIT ?", (limit,))

    # --- notifications ----------------------------------------------------------------------

    def add_notification(self, n: Notification) -> None:
        self._insert("notifications", _NOTIFY[1:], n)

    def _notifications(self, where: str, params: tuple[object, ...]) -> list[Notification]:
        rows = self._all(f"SELECT {', '.join(_NOTIFY)} FROM notifications WHERE {where}", params)
        return [Notification(**{**dict(zip(_NOTIFY, r, strict=True)), "body": bytes(r[5])})
                for r in rows]  # fmt: skip

    def due_notifications(self, now: float, limit: int) -> list[Notification]:
        return self._notifications(
            "state = 'PENDING' AND next_at <= ? ORDER BY next_at, id LIMIT ?", (now, limit)
        )

    def held_notifications(self) -> list[Notification]:
        return self._notifications("state = 'HELD' ORDER BY id", ())

    def active_notification_count(self) -> int:
        rows = self._all("SELECT COUNT(*) FROM notifications WHERE state IN ('PENDING', 'HELD')")
        return int(rows[0][0])

    def list_notifications(self, order_id: str | None, limit: int) -> list[Notification]:
        if order_id is None:
            return self._notifications("1 = 1 ORDER BY id DESC LIMIT ?", (limit,))
        return self._notifications("order_id = ? ORDER BY id DESC LIMIT ?", (order_id, limit))

    def schedule_notification(self, row_id: int, state: str, next_at: float) -> None:
        self._run(
            "UPDATE notifications SET state = ?, next_at = ? WHERE id = ?", (state, next_at, row_id)
        )

    def record_attempt(
        self, row_id: int, state: str, next_at: float, status: int | None, error: str | None
    ) -> None:
        self._run(
            "UPDATE notifications SET state = ?, next_at = ?, attempts = attempts + 1, "
            "last_status = ?, last_error = ? WHERE id = ?",
            (state, next_at, status, error, row_id),
        )
