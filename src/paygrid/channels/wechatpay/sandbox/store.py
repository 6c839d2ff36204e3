"""Sandbox state in SQLite under the data directory: orders, refunds, callbacks to send, bill
files, closed business days, knobs.

One connection guarded by a re-entrant lock, so the web server and the callback thread share it;
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

DB_FILE = "wechatpay-sandbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    mchid TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    appid TEXT NOT NULL,
    trade_type TEXT NOT NULL,
    description TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    total INTEGER NOT NULL,
    currency TEXT NOT NULL,
    attach TEXT NOT NULL,
    time_expire TEXT,
    expire_at REAL,
    request_digest TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    prepay_id TEXT NOT NULL UNIQUE,
    payer_openid TEXT,
    trade_state TEXT NOT NULL,
    transaction_id TEXT UNIQUE,
    success_at REAL,
    bank_type TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (mchid, out_trade_no)
);
CREATE INDEX IF NOT EXISTS orders_paid ON orders (mchid, success_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notify_id TEXT NOT NULL,
    mchid TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    probe INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at);
CREATE TABLE IF NOT EXISTS bill_files (
    token TEXT PRIMARY KEY,
    mchid TEXT NOT NULL,
    content BLOB NOT NULL,
    compressed INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
    mchid TEXT NOT NULL,
    out_refund_no TEXT NOT NULL,
    refund_id TEXT NOT NULL UNIQUE,
    out_trade_no TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    reason TEXT,
    notify_url TEXT,
    funds_account TEXT NOT NULL,
    goods_detail TEXT,
    refund INTEGER NOT NULL,
    total INTEGER NOT NULL,
    currency TEXT NOT NULL,
    fee_refund INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    success_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (mchid, out_refund_no)
);
CREATE INDEX IF NOT EXISTS refunds_of_trade ON refunds (mchid, out_trade_no);
CREATE INDEX IF NOT EXISTS refunds_due ON refunds (status, due_at);
CREATE INDEX IF NOT EXISTS refunds_created ON refunds (mchid, created_at);
CREATE TABLE IF NOT EXISTS closed_days (day TEXT PRIMARY KEY, closed_at REAL NOT NULL);
"""
# Columns added after the first release; added to an older data directory's tables on open.
_ADDED_COLUMNS = (("notifications", "out_refund_no", "TEXT"),)


@dataclass(frozen=True, slots=True)
class Order:
    mchid: str
    out_trade_no: str
    appid: str
    trade_type: str  # NATIVE | JSAPI | MWEB | APP
    description: str
    notify_url: str
    total: int  # fen
    currency: str
    attach: str
    time_expire: str | None
    expire_at: float | None
    request_digest: str  # same out_trade_no must come with the same request
    token: str  # the pr= of the code_url, and the pay page's address
    prepay_id: str
    payer_openid: str | None
    trade_state: str
    transaction_id: str | None
    success_at: float | None
    bank_type: str | None
    created_at: float
    updated_at: float

    def with_changes(self, **changes: Any) -> Order:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund (退款单), keyed by the merchant's ``out_refund_no``. Amounts in fen."""

    mchid: str
    out_refund_no: str
    refund_id: str  # 微信支付退款单号
    out_trade_no: str
    transaction_id: str
    reason: str | None
    notify_url: str | None
    funds_account: str  # UNSETTLED unless the merchant asked for AVAILABLE
    goods_detail: str | None  # the request's goods_detail, as JSON
    refund: int  # 申请退款金额
    total: int  # 原订单金额
    currency: str
    fee_refund: int  # 手续费退款金额: the part of the payment's fee this refund returns
    status: str  # PROCESSING | SUCCESS | ABNORMAL | CLOSED
    created_at: float
    due_at: float  # when the refund leaves PROCESSING
    success_at: float | None
    updated_at: float

    def with_changes(self, **changes: Any) -> Refund:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Notification:
    """One callback delivery (回调): a row per copy, so a duplicate fault is a second row.
    ``out_refund_no`` is set on refund notifications."""

    id: int
    notify_id: str
    mchid: str
    out_trade_no: str
    url: str
    body: bytes
    probe: bool
    state: str  # HELD | PENDING | DELIVERED | FAILED | DROPPED | PROBED
    attempts: int
    next_at: float
    created_at: float
    last_status: int | None
    last_error: str | None
    out_refund_no: str | None = None


_REFUND_COLUMNS = tuple(f.name for f in fields(Refund))
_ORDER_COLUMNS = tuple(f.name for f in fields(Order))
_NOTIFY_COLUMNS = tuple(f.name for f in fields(Notification))


def _notification(row: tuple[Any, ...]) -> Notification:
    values = dict(zip(_NOTIFY_COLUMNS, row, strict=True))
    values["body"] = bytes(values["body"])
    values["probe"] = bool(values["probe"])
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
        self._add_columns()

    def _add_columns(self) -> None:
        for table, column, kind in _ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

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

    # --- settings ---------------------------------------------------------------------------

    def get_setting(self, name: str) -> Any:
        rows = self._all("SELECT value FROM settings WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def put_setting(self, name: str, value: object) -> None:
        self._run(
            "INSERT INTO settings (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )

    # --- orders -----------------------------------------------------------------------------

    def _orders(self, where: str, params: tuple[object, ...]) -> list[Order]:
        columns = ", ".join(_ORDER_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM orders WHERE {where}", params)
        return [Order(*row) for row in rows]

    def get_order(self, mchid: str, out_trade_no: str) -> Order | None:
        found = self._orders("mchid = ? AND out_trade_no = ?", (mchid, out_trade_no))
        return found[0] if found else None

    def order_by_transaction_id(self, mchid: str, transaction_id: str) -> Order | None:
        found = self._orders("mchid = ? AND transaction_id = ?", (mchid, transaction_id))
        return found[0] if found else None

    def order_by_token(self, token: str) -> Order | None:
        found = self._orders("token = ? OR prepay_id = ?", (token, token))
        return found[0] if found else None

    def insert_order(self, order: Order) -> None:
        marks = ", ".join("?" for _ in _ORDER_COLUMNS)
        self._run(
            f"INSERT INTO orders ({', '.join(_ORDER_COLUMNS)}) VALUES ({marks})",
            tuple(getattr(order, name) for name in _ORDER_COLUMNS),
        )

    def update_order(self, order: Order) -> None:
        changing = [c for c in _ORDER_COLUMNS if c not in ("mchid", "out_trade_no")]
        assignments = ", ".join(f"{c} = ?" for c in changing)
        self._run(
            f"UPDATE orders SET {assignments} WHERE mchid = ? AND out_trade_no = ?",
            (*(getattr(order, c) for c in changing), order.mchid, order.out_trade_no),
        )

    def paid_between(self, mchid: str, start: float, end: float) -> list[Order]:
        return self._orders(
            "mchid = ? AND success_at >= ? AND success_at < ? ORDER BY success_at",
            (mchid, start, end),
        )

    def list_orders(self, limit: int) -> list[Order]:
        return self._orders("1 = 1 ORDER BY created_at DESC LIMIT ?", (limit,))

    # --- notifications ----------------------------------------------------------------------

    def add_notification(self, n: Notification) -> None:
        columns = [c for c in _NOTIFY_COLUMNS if c != "id"]
        marks = ", ".join("?" for _ in columns)
        self._run(
            f"INSERT INTO notifications ({', '.join(columns)}) VALUES ({marks})",
            tuple(getattr(n, c) for c in columns),
        )

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

    def list_notifications(
        self, out_trade_no: str | None, limit: int, out_refund_no: str | None = None
    ) -> list[Notification]:
        conditions = ["1 = 1"]
        params: list[object] = []
        for column, value in (("out_trade_no", out_trade_no), ("out_refund_no", out_refund_no)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(conditions)
        return self._notifications(f"{where} ORDER BY id DESC LIMIT ?", (*params, limit))

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

    # --- bill files -------------------------------------------------------------------------

    def save_bill(
        self, token: str, mchid: str, content: bytes, compressed: bool, expires_at: float
    ) -> None:
        with self.transaction():
            self._run("DELETE FROM bill_files WHERE expires_at < ?", (expires_at - 3600,))
            self._run(
                "INSERT INTO bill_files (token, mchid, content, compressed, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token, mchid, content, int(compressed), expires_at),
            )

    def load_bill(self, token: str, mchid: str, now: float) -> tuple[bytes, bool] | None:
        rows = self._all(
            "SELECT content, compressed FROM bill_files "
            "WHERE token = ? AND mchid = ? AND expires_at >= ?",
            (token, mchid, now),
        )
        return (bytes(rows[0][0]), bool(rows[0][1])) if rows else None

    # --- refunds ----------------------------------------------------------------------------

    def _refunds(self, where: str, params: tuple[object, ...]) -> list[Refund]:
        columns = ", ".join(_REFUND_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM refunds WHERE {where}", params)
        return [Refund(*row) for row in rows]

    def get_refund(self, mchid: str, out_refund_no: str) -> Refund | None:
        found = self._refunds("mchid = ? AND out_refund_no = ?", (mchid, out_refund_no))
        return found[0] if found else None

    def refunds_of_trade(self, mchid: str, out_trade_no: str) -> list[Refund]:
        return self._refunds(
            "mchid = ? AND out_trade_no = ? ORDER BY created_at, refund_id", (mchid, out_trade_no)
        )

    def due_refunds(self, now: float, limit: int) -> list[Refund]:
        return self._refunds(
            "status = 'PROCESSING' AND due_at <= ? ORDER BY due_at, refund_id LIMIT ?",
            (now, limit),
        )

    def refunds_created_between(self, mchid: str, start: float, end: float) -> list[Refund]:
        return self._refunds(
            "mchid = ? AND created_at >= ? AND created_at < ? ORDER BY created_at, refund_id",
            (mchid, start, end),
        )

    def list_refunds(self, limit: int) -> list[Refund]:
        return self._refunds("1 = 1 ORDER BY created_at DESC, refund_id LIMIT ?", (limit,))

    def insert_refund(self, refund: Refund) -> None:
        marks = ", ".join("?" for _ in _REFUND_COLUMNS)
        self._run(
            f"INSERT INTO refunds ({', '.join(_REFUND_COLUMNS)}) VALUES ({marks})",
            tuple(getattr(refund, name) for name in _REFUND_COLUMNS),
        )

    def update_refund(self, refund: Refund) -> None:
        changing = ("status", "success_at", "updated_at")
        assignments = ", ".join(f"{c} = ?" for c in changing)
        self._run(
            f"UPDATE refunds SET {assignments} WHERE mchid = ? AND out_refund_no = ?",
            (*(getattr(refund, c) for c in changing), refund.mchid, refund.out_refund_no),
        )

    # --- business days (账单日) -------------------------------------------------------------

    def close_day(self, day: str, now: float) -> float:
        """Mark ``day`` (YYYY-MM-DD) closed; the first close time is kept and returned."""
        with self.transaction():
            self._run(
                "INSERT OR IGNORE INTO closed_days (day, closed_at) VALUES (?, ?)", (day, now)
            )
            rows = self._all("SELECT closed_at FROM closed_days WHERE day = ?", (day,))
        return float(rows[0][0])

    def day_closed(self, day: str) -> bool:
        return bool(self._all("SELECT 1 FROM closed_days WHERE day = ?", (day,)))
