"""The sandbox's SQLite schema (``store.py``), and the columns later versions added to a table
(added to an existing data directory on start)."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS agreements (
    instg_id TEXT NOT NULL,
    trx_id TEXT NOT NULL,
    bank_id TEXT NOT NULL,
    account_no TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    id_type TEXT NOT NULL,
    id_no TEXT NOT NULL,
    mobile TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    code TEXT NOT NULL,
    code_expires_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    sgn_no TEXT UNIQUE,
    failure TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (instg_id, trx_id)
);
CREATE TABLE IF NOT EXISTS sms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mobile TEXT NOT NULL,
    trx_id TEXT NOT NULL,
    code TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    instg_id TEXT NOT NULL,
    trx_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ori_trx_id TEXT NOT NULL,
    sgn_no TEXT NOT NULL,
    bank_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    status TEXT NOT NULL,
    failure TEXT NOT NULL,
    sys_trx_id TEXT NOT NULL UNIQUE,
    notify_url TEXT NOT NULL,
    description TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL,
    finished_at REAL,
    batch_id TEXT NOT NULL,
    token TEXT NOT NULL DEFAULT '',
    return_url TEXT NOT NULL DEFAULT '',
    expires_at REAL,
    PRIMARY KEY (instg_id, trx_id)
);
CREATE INDEX IF NOT EXISTS trades_due ON trades (status, due_at);
CREATE INDEX IF NOT EXISTS trades_finished ON trades (instg_id, finished_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notify_id TEXT NOT NULL,
    trx_id TEXT NOT NULL,
    bank_id TEXT NOT NULL,
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
CREATE TABLE IF NOT EXISTS files (
    token TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    content BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS closed_days (day TEXT PRIMARY KEY, closed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

ADDED_TRADE_COLUMNS = {
    "token": "TEXT NOT NULL DEFAULT ''",
    "return_url": "TEXT NOT NULL DEFAULT ''",
    "expires_at": "REAL",
}
