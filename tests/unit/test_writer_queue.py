"""SQLite writers queue in the process (and across processes on the same file), not in
SQLite's busy handler: a writer is let in as soon as the one before commits."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from paygrid.storage.database import Database

HOLD_S = 0.05


def _write(db: Database, tag: str, hold_s: float) -> None:
    with db.transaction() as conn:
        conn.execute(text("INSERT INTO t (tag) VALUES (:tag)"), {"tag": tag})
        time.sleep(hold_s)


def _no_busy_handler(path: str) -> Database:
    """A Database whose connections fail at once on a taken lock instead of waiting in
    SQLite's busy handler: any writer that was not queued by paygrid errors out."""
    db = Database(f"sqlite:///{path}")

    @event.listens_for(db.engine, "connect")
    def _no_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    return db


def _fresh(tmp_path: Path) -> Database:
    db = _no_busy_handler(str(tmp_path / "q.db"))
    with db.transaction() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (tag TEXT)"))
    return db


def test_threads_take_turns_and_none_waits_in_the_busy_handler(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            _write(db, tag, HOLD_S)
        except BaseException as exc:  # "database is locked": a writer was not queued
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 8


def _child(path: str, n: int) -> None:
    db = _no_busy_handler(path)
    for i in range(n):
        _write(db, f"child{i}", 0.01)


def test_another_process_on_the_same_file_queues_on_the_lock_file(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child, args=(str(tmp_path / "q.db"), 20))
    child.start()
    for i in range(20):
        _write(db, f"parent{i}", 0.01)
    child.join(60)
    assert child.exitcode == 0
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 40
    assert (tmp_path / "q.db.writer-lock").exists()


def test_a_write_transaction_inside_another_on_one_thread_is_refused(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    with (
        db.transaction(),
        pytest.raises(AssertionError, match="inside another"),
        db.transaction(),
    ):
        pass
    _write(db, "after", 0)  # the queue is free again


def test_readers_do_not_queue_behind_a_writer(tmp_path: Path) -> None:
    db = _fresh(tmp_path)
    with db.transaction() as conn:
        conn.execute(text("INSERT INTO t (tag) VALUES ('x')"))
        with db.read() as reader:  # a snapshot from before the write: no wait, no lock
            assert reader.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
