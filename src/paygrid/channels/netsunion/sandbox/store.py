"""Sandbox state in SQLite under the data directory: agreements (协议), the SMS codes the banks
"sent", trades (debits, gateway orders and refunds, one table: a TrxId names one of them),
notifications to send, clearing files, closed days and knobs.

One connection guarded by a re-entrant lock, so the web server and the sender thread share it;
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

from paygrid.channels.netsunion.sandbox.schema import ADDED_TRADE_COLUMNS, SCHEMA

DB_FILE = "netsunion-sandbox.sqlite3"


@dataclass(frozen=True, slots=True)
class Agreement:
    """An agreement (协议). ``state`` PENDING_CODE | SIGNED | FAILED."""

    instg_id: str
    trx_id: str  # the member's reference for it (TrxId of the 0201)
    bank_id: str
    account_no: str
    holder_name: str
    id_type: str
    id_no: str
    mobile: str
    request_digest: str
    state: str
    code: str  # the SMS code the bank sent
    code_expires_at: float
    attempts: int  # wrong codes so far
    sgn_no: str | None
    failure: str  # the business code that failed it
    created_at: float
    updated_at: float

    def with_changes(self, **changes: Any) -> Agreement:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Trade:
    """A debit (kind DEBIT), a gateway order (PAGE) or a refund (REFUND). ``status`` 02
    processing, 00 success, 01 failed (the BizStsCd words), 03 closed (a PAGE only)."""

    instg_id: str
    trx_id: str
    kind: str
    ori_trx_id: str  # a refund's debit; "" on a debit
    sgn_no: str
    bank_id: str
    amount: int  # fen
    refunded: int  # a debit's refunds so far (accepted, fen)
    fee: int  # the platform's fee: charged on a debit, returned on a refund
    status: str
    failure: str
    sys_trx_id: str
    notify_url: str
    description: str
    request_digest: str
    created_at: float
    due_at: float | None  # when the bank decides; None: waits for /sandbox/pay
    finished_at: float | None
    batch_id: str  # the clearing batch it was cleared in ("" until finished)
    token: str = ""  # a gateway order's page token
    return_url: str = ""  # where its bank page sends the payer back
    expires_at: float | None = None  # when its page stops taking payment

    def with_changes(self, **changes: Any) -> Trade:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    notify_id: str
    trx_id: str
    bank_id: str
    url: str
    body: bytes
    state: str  # HELD | PENDING | DELIVERED | FAILED | DROPPED
    attempts: int
    next_at: float
    created_at: float
    last_status: int | None
    last_answer: str | None
    last_error: str | None


_AGREEMENT_COLUMNS = tuple(f.name for f in fields(Agreement))
_TRADE_COLUMNS = tuple(f.name for f in fields(Trade))
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
        self._db.executescript(SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(trades)")}
        for column, kind in ADDED_TRADE_COLUMNS.items():  # a data dir of an earlier version
            if column not in have:
                self._db.execute(f"ALTER TABLE trades ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS trades_token ON trades (token)")

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

    def _update(
        self, table: str, columns: tuple[str, ...], keys: tuple[str, ...], row: object
    ) -> None:
        changing = [c for c in columns if c not in keys]
        assignments = ", ".join(f"{c} = ?" for c in changing)
        where = " AND ".join(f"{k} = ?" for k in keys)
        self._run(
            f"UPDATE {table} SET {assignments} WHERE {where}",
            (*(getattr(row, c) for c in changing), *(getattr(row, k) for k in keys)),
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

    # --- agreements and SMS -----------------------------------------------------------------

    def _agreements(self, where: str, params: tuple[object, ...]) -> list[Agreement]:
        columns = ", ".join(_AGREEMENT_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM agreements WHERE {where}", params)
        return [Agreement(*row) for row in rows]

    def get_agreement(self, instg_id: str, trx_id: str) -> Agreement | None:
        found = self._agreements("instg_id = ? AND trx_id = ?", (instg_id, trx_id))
        return found[0] if found else None

    def agreement_by_sgn_no(self, instg_id: str, sgn_no: str) -> Agreement | None:
        found = self._agreements("instg_id = ? AND sgn_no = ?", (instg_id, sgn_no))
        return found[0] if found else None

    def insert_agreement(self, agreement: Agreement) -> None:
        self._insert("agreements", _AGREEMENT_COLUMNS, agreement)

    def update_agreement(self, agreement: Agreement) -> None:
        self._update("agreements", _AGREEMENT_COLUMNS, ("instg_id", "trx_id"), agreement)

    def list_agreements(self, limit: int) -> list[Agreement]:
        return self._agreements("1 = 1 ORDER BY created_at DESC LIMIT ?", (limit,))

    def add_sms(self, mobile: str, trx_id: str, code: str, text: str, now: float) -> None:
        self._run(
            "INSERT INTO sms (mobile, trx_id, code, text, sent_at) VALUES (?, ?, ?, ?, ?)",
            (mobile, trx_id, code, text, now),
        )

    def list_sms(self, mobile: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = ("mobile = ?", (mobile,)) if mobile else ("1 = 1", ())
        rows = self._all(
            f"SELECT mobile, trx_id, code, text, sent_at FROM sms WHERE {where} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        keys = ("mobile", "trx_id", "code", "text", "sent_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- trades -----------------------------------------------------------------------------

    def _trades(self, where: str, params: tuple[object, ...]) -> list[Trade]:
        columns = ", ".join(_TRADE_COLUMNS)
        rows = self._all(f"SELECT {columns} FROM trades WHERE {where}", params)
        return [Trade(*row) for row in rows]

    def get_trade(self, instg_id: str, trx_id: str) -> Trade | None:
        found = self._trades("instg_id = ? AND trx_id = ?", (instg_id, trx_id))
        return found[0] if found else None

    def trade_by_token(self, token: str) -> Trade | None:
        found = self._trades("token = ? AND token <> '' LIMIT 1", (token,))
        return found[0] if found else None

    def insert_trade(self, trade: Trade) -> None:
        self._insert("trades", _TRADE_COLUMNS, trade)

    def update_trade(self, trade: Trade) -> None:
        self._update("trades", _TRADE_COLUMNS, ("instg_id", "trx_id"), trade)

    def due_trades(self, now: float, limit: int) -> list[Trade]:
        return self._trades(
            "status = '02' AND due_at IS NOT NULL AND due_at <= ? ORDER BY due_at LIMIT ?",
            (now, limit),
        )

    def finished_between(self, instg_id: str, start: float, end: float) -> list[Trade]:
        return self._trades(
            "instg_id = ? AND status = '00' AND finished_at >= ? AND finished_at < ? "
            "ORDER BY finished_at, trx_id",
            (instg_id, start, end),
        )

    def list_trades(self, kinds: tuple[str, ...], limit: int) -> list[Trade]:
        marks = ", ".join("?" for _ in kinds)
        return self._trades(f"kind IN ({marks}) ORDER BY created_at DESC LIMIT ?", (*kinds, limit))

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

    def list_notifications(self, trx_id: str | None, limit: int) -> list[Notification]:
        if trx_id is None:
            return self._notifications("1 = 1 ORDER BY id DESC LIMIT ?", (limit,))
        return self._notifications("trx_id = ? ORDER BY id DESC LIMIT ?", (trx_id, limit))

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
        self._run(
            "UPDATE notifications SET state = ?, next_at = ?, attempts = attempts + 1, "
            "last_status = ?, last_answer = ?, last_error = ? WHERE id = ?",
            (state, next_at, *answer, row_id),
        )

    # --- clearing files ---------------------------------------------------------------------

    def save_file(self, token: str, name: str, content: bytes, expires: float) -> None:
        with self.transaction():
            self._run("DELETE FROM files WHERE expires_at < ?", (expires - 3600,))
            self._run(
                "INSERT INTO files (token, name, content, expires_at) VALUES (?, ?, ?, ?)",
                (token, name, content, expires),
            )

    def load_file(self, token: str, now: float) -> tuple[str, bytes] | None:
        rows = self._all(
            "SELECT name, content FROM files WHERE token = ? AND expires_at >= ?", (token, now)
        )
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None
