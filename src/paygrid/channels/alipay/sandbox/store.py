"""Sandbox state in SQLite under the data directory: trades, refunds, notifies to send, bill
files, closed days and knobs.

One connection guarded by a re-entrant lock, so the web server and the notify thread share it;
``transaction()`` makes a read-modify-write atomic.
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

DB_FILE = "alipay-sandbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    app_id TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    total INTEGER NOT NULL,
    notify_url TEXT NOT NULL,
    return_url TEXT NOT NULL,
    passback_params TEXT NOT NULL,
    store_id TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    trade_no TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    buyer_logon_id TEXT NOT NULL,
    expire_at REAL NOT NULL,
    scan_until REAL NOT NULL,
    requested_at REAL NOT NULL,
    created_at REAL,
    paid_at REAL,
    closed_at REAL,
    refunded INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (app_id, out_trade_no)
);
CREATE INDEX IF NOT EXISTS trades_paid ON trades (app_id, paid_at);
CREATE INDEX IF NOT EXISTS trades_due ON trades (status, expire_at);
CREATE TABLE IF NOT EXISTS refunds (
    app_id TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    out_request_no TEXT NOT NULL,
    trade_no TEXT NOT NULL,
    amount INTEGER NOT NULL,
    reason TEXT NOT NULL,
    fee_returned INTEGER NOT NULL,
    refunded_at REAL NOT NULL,
    PRIMARY KEY (app_id, out_trade_no, out_request_no)
);
CREATE INDEX IF NOT EXISTS refunds_day ON refunds (app_id, refunded_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notify_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    trade_status TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_status INTEGER,
    last_answer TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at);
CREATE TABLE IF NOT EXISTS bill_files (
    token TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS closed_days (day TEXT PRIMARY KEY, closed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade (交易). ``status`` UNSCANNED (precreated or page pay not yet opened: not a trade
    to Alipay's API), EXPIRED (never opened, now dead), or Alipay's WAIT_BUYER_PAY,
    TRADE_SUCCESS, TRADE_CLOSED, TRADE_FINISHED."""

    app_id: str
    out_trade_no: str
    kind: str  # precreate | page | wap
    subject: str
    body: str
    total: int  # fen
    notify_url: str
    return_url: str
    passback_params: str
    store_id: str
    request_digest: str  # the same out_trade_no must come with the same order
    token: str  # the QR's and the cashier page's address
    trade_no: str
    status: str
    buyer_id: str
    buyer_logon_id: str
    expire_at: float  # unpaid → TRADE_CLOSED (or EXPIRED) at this time
    scan_until: float  # an unscanned QR dies at this time (two hours at most)
    requested_at: float
    created_at: float | None  # gmt_create: when the payer opened it
    paid_at: float | None  # gmt_payment
    closed_at: float | None  # gmt_close
    refunded: int  # fen refunded so far
    fee: int  # service fee charged at payment, fen
    updated_at: float

    def with_changes(self, **changes: Any) -> Trade:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Refund:
    app_id: str
    out_trade_no: str
    out_request_no: str
    trade_no: str
    amount: int  # fen
    reason: str
    fee_returned: int  # fen of service fee given back
    refunded_at: float


@dataclass(frozen=True, slots=True)
class Notification:
    """One notify delivery (异步通知): a row per copy, so a duplicate fault is a second row."""

    id: int
    notify_id: str
    app_id: str
    out_trade_no: str
    trade_status: str
    url: str
    body: bytes  # the form, signed, URL-encoded
    state: str  # HELD | PENDING | DELIVERED | FAILED | DROPPED
    attempts: int
    next_at: float
    created_at: float
    last_status: int | None
    last_answer: str | None
    last_error: str | None


_TRADE_COLUMNS = tuple(f.name for f in fields(Trade))
_REFUND_COLUMNS = tuple(f.name for f in fields(Refund))
_NOTIFY_COLUMNS = tuple(f.name for f in fields(Notification))


def _notification(row: tuple[Any, ...]) -> Notification:
    values = dict(zip(_NOTIFY_COLUMNS, row, strict=True))
    values["body"] = bytes(values["body"])
    return Notification(**values)


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
        """Mark ``day`` (YYYY-MM-DD) ended; the first close time stays."""
        self._run("INSERT OR IGNORE INTO closed_days (day, closed_at) VALUES (?, ?)", (day, now))
        return float(self._all("SELECT closed_at FROM closed_days WHERE day = ?", (day,))[0][0])

    def day_closed_at(self, day: str) -> float | None:
        rows = self._all("SELECT closed_at FROM closed_days WHERE day = ?", (day,))
        return float(rows[0][0]) if rows else None

    # --- trades -----------------------------------------------------------------------------

    def _trades(self, where: str, params: tuple[object, ...]) -> list[Trade]:
        columns = ", ".join(_TRADE_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM trades WHERE {where}", params)
        return [Trade(*row) for row in rows]

    def get_trade(self, app_id: str, out_trade_no: str) -> Trade | None:
        found = self._trades("app_id = ? AND out_trade_no = ?", (app_id, out_trade_no))
        return found[0] if found else None

    def trade_by_trade_no(self, app_id: str, trade_no: str) -> Trade | None:
        found = self._trades("app_id = ? AND trade_no = ?", (app_id, trade_no))
        return found[0] if found else None

    def trade_by_token(self, token: str) -> Trade | None:
        found = self._trades("token = ?", (token,))
        return found[0] if found else None

    def insert_trade(self, trade: Trade) -> None:
        self._insert("trades", _TRADE_COLUMNS, trade)

    def update_trade(self, trade: Trade) -> None:
        changing = [c for c in _TRADE_COLUMNS if c not in ("app_id", "out_trade_no")]
        assignments = ", ".join(f"{c} = ?" for c in changing)
        self._run(
            f"UPDATE trades SET {assignments} WHERE app_id = ? AND out_trade_no = ?",
            (*(getattr(trade, c) for c in changing), trade.app_id, trade.out_trade_no),
        )

    def due_trades(self, now: float, finish_before: float, limit: int) -> list[Trade]:
        """Unpaid trades past their expiry, paid ones past the refund window."""
        return self._trades(
            "(status IN ('UNSCANNED', 'WAIT_BUYER_PAY') AND expire_at <= ?) "
            "OR (status = 'UNSCANNED' AND scan_until <= ?) "
            "OR (status = 'TRADE_SUCCESS' AND paid_at <= ?) LIMIT ?",
            (now, now, finish_before, limit),
        )

    def paid_between(self, app_id: str, start: float, end: float) -> list[Trade]:
        return self._trades(
            "app_id = ? AND paid_at >= ? AND paid_at < ? ORDER BY paid_at",
            (app_id, start, end),
        )

    def list_trades(self, limit: int) -> list[Trade]:
        return self._trades("1 = 1 ORDER BY requested_at DESC LIMIT ?", (limit,))

    # --- refunds ----------------------------------------------------------------------------

    def _refunds(self, where: str, params: tuple[object, ...]) -> list[Refund]:
        columns = ", ".join(_REFUND_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM refunds WHERE {where}", params)
        return [Refund(*row) for row in rows]

    def get_refund(self, app_id: str, out_trade_no: str, out_request_no: str) -> Refund | None:
        found = self._refunds(
            "app_id = ? AND out_trade_no = ? AND out_request_no = ?",
            (app_id, out_trade_no, out_request_no),
        )
        return found[0] if found else None

    def insert_refund(self, refund: Refund) -> None:
        self._insert("refunds", _REFUND_COLUMNS, refund)

    def list_refunds(self, limit: int) -> list[Refund]:
        return self._refunds("1 = 1 ORDER BY refunded_at DESC, out_request_no LIMIT ?", (limit,))

    def refunds_between(self, app_id: str, start: float, end: float) -> list[Refund]:
        return self._refunds(
            "app_id = ? AND refunded_at >= ? AND refunded_at < ? ORDER BY refunded_at",
            (app_id, start, end),
        )

    # --- notifications ----------------------------------------------------------------------

    def add_notification(self, n: Notification) -> None:
        self._insert("notifications", _NOTIFY_COLUMNS[1:], n)

    def _notifications(self, where: str, params: tuple[object, ...]) -> list[Notification]:
        columns = ", ".join(_NOTIFY_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM notifications WHERE {where}", params)
        return [_notification(row) for row in rows]

    def due_notifications(self, now: float, limit: int) -> list[Notification]:
        return self._notifications(
            "state = 'PENDING' AND next_at <= ? ORDER BY next_at, id LIMIT ?", (now, limit)
        )

    def held_notifications(self) -> list[Notification]:
        return self._notifications("state = 'HELD' ORDER BY id", ())

    def active_notification_count(self) -> int:
        rows = self._all("SELECT COUNT(*) FROM notifications WHERE state IN ('PENDING', 'HELD')")
        return int(rows[0][0])

    def list_notifications(self, out_trade_no: str | None, limit: int) -> list[Notification]:
        if out_trade_no is None:
            return self._notifications("1 = 1 ORDER BY id DESC LIMIT ?", (limit,))
        return self._notifications(
            "out_trade_no = ? ORDER BY id DESC LIMIT ?", (out_trade_no, limit)
        )

    def schedule_notification(self, row_id: int, state: str, next_at: float) -> None:
        self._run(
            "UPDATE notifications SET state = ?, next_at = ? WHERE id = ?", (state, next_at, row_id)
        )

    def record_attempt(
        self,
        row_id: int,
        state: str,
        next_at: float,
        answer: tuple[int | None, str | None, str | None],
    ) -> None:
        """``answer`` is (HTTP status, body text, transport error) of this attempt."""
        self._run(
            "UPDATE notifications SET state = ?, next_at = ?, attempts = attempts + 1, "
            "last_status = ?, last_answer = ?, last_error = ? WHERE id = ?",
            (state, next_at, *answer, row_id),
        )

    # --- bill files -------------------------------------------------------------------------

    def save_bill(self, token: str, app_id: str, name: str, content: bytes, expires: float) -> None:
        with self.transaction():
            self._run("DELETE FROM bill_files WHERE expires_at < ?", (expires - 3600,))
            self._run(
                "INSERT INTO bill_files (token, app_id, name, content, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token, app_id, name, content, expires),
            )

    def load_bill(self, token: str, now: float) -> tuple[str, bytes] | None:
        rows = self._all(
            "SELECT name, content FROM bill_files WHERE token = ? AND expires_at >= ?",
            (token, now),
        )
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None
