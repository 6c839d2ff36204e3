"""Ledger postings: batched entries/s on SQLite and PostgreSQL beside a bulk insert of the same
rows in the same run (executemany on SQLite, COPY on PostgreSQL), and N ledger consumer
processes on PostgreSQL posting at once, with the backends waiting on locks sampled from
pg_stat_activity. Designs of the running totals compared (--designs):
  shards   each transaction adds its batch's totals to the balance shard it holds (paygrid's)
  one-row  the same batch totals, but every transaction on the same row per account
  per-event one event per transaction on one row per account (how paygrid posted before)

    .venv/bin/python bench/ledger.py [--vouchers 20000] [--batch 1000] [--consumers 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import common  # also puts the repository root on sys.path

from paygrid.bus.codec import event_data
from paygrid.bus.ports import Event
from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.ledger import repository
from paygrid.ledger.domain import capture_fees, capture_voucher
from paygrid.ledger.handlers import FeeRates, LedgerConsumer
from paygrid.ledger.repository import AccountCache, Posting
from paygrid.ops.scratch import postgres_server
from paygrid.payments.events import Amount, PaymentSucceeded, PaymentView
from paygrid.storage.database import Database

MERCHANTS = 50
ENTRY_COLUMNS = ("voucher_id", "account_code", "direction", "amount", "currency")
SAMPLE_S = 0.005
DESIGNS = {"shards": (repository.BALANCE_SHARDS, 0), "one-row": (1, 0), "per-event": (1, 1)}


def postings(n: int) -> list[Posting]:
    now, out = utcnow(), []
    for i in range(n):
        amount = 1_000 + i % 9_000
        fees = capture_fees(amount, 6000, 2000)
        v = capture_voucher(new_id("pay"), f"m{i % MERCHANTS}", "wechatpay", amount, "CNY", fees)
        out.append(Posting(v, now))
    return out


def bulk_rows(posts: list[Posting]) -> list[tuple[Any, ...]]:
    return [
        (f"v{i}", e.account.code, e.direction.value, e.amount, e.account.currency)
        for i, p in enumerate(posts)
        for e in p.voucher.entries
    ]


def post_rate(db: Database, posts: list[Posting], batch: int) -> tuple[float, int]:
    """Entries/s of post_many over ``posts`` in transactions of ``batch`` vouchers."""
    cache = AccountCache()
    with db.transaction() as conn:  # the accounts exist before the clock starts
        cache.learn(
            repository.post_many(conn, posts[:batch], utcnow(), "Asia/Shanghai").new_accounts
        )
    entries, start = 0, time.perf_counter()
    for i in range(batch, len(posts), batch):
        chunk = posts[i : i + batch]
        with db.transaction() as conn:
            repository.post_many(conn, chunk, utcnow(), "Asia/Shanghai", 0, cache)
        entries += sum(len(p.voucher.entries) for p in chunk)
    return entries / (time.perf_counter() - start), entries


def bulk_rate(db: Database, rows: list[tuple[Any, ...]]) -> float:
    """The same rows into a bare table: executemany on SQLite, COPY on PostgreSQL."""
    cols = ", ".join(ENTRY_COLUMNS)
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(
            "CREATE TABLE bulk (voucher_id VARCHAR(40), account_code VARCHAR(96), "
            "direction VARCHAR(1), amount BIGINT, currency VARCHAR(3))"
        )
        raw.commit()
        start = time.perf_counter()
        if db.is_sqlite:
            cur.execute("BEGIN")
            cur.executemany(f"INSERT INTO bulk ({cols}) VALUES (?, ?, ?, ?, ?)", rows)
        else:
            with cur.copy(f"COPY bulk ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
        raw.commit()
        return len(rows) / (time.perf_counter() - start)
    finally:
        raw.close()


def single(url: str, vouchers: int, batch: int) -> dict[str, Any]:
    db = Database(url)
    db.migrate()
    posts = postings(vouchers)
    rate, entries = post_rate(db, posts, batch)
    base = bulk_rate(db, bulk_rows(posts))
    db.engine.dispose()
    return {
        "post_many_entries_per_s": round(rate),
        "bulk_insert_rows_per_s": round(base),
        "ratio": common.ratio(rate, base, 3),
        "entries": entries,
        "vouchers_per_transaction": batch,
    }


def events(n: int) -> list[Event]:
    now, out = utcnow(), []
    for i in range(n):
        pid = new_id("pay")
        view = PaymentView(
            pid, f"m{i % MERCHANTS}", pid, Amount(1_000 + i % 9_000, "CNY"), "d", "SUCCESS",
            "wechatpay", "native", "c", "n", None, now + timedelta(hours=1), None, (), (), "t",
            now, now, None,
        )  # fmt: skip
        data = event_data(PaymentSucceeded(view))
        out.append(Event(new_id("evt"), PaymentSucceeded.TYPE, pid, now, data))
    return out


def worker(url: str, design: str, n: int, batch: int) -> None:
    """One ledger consumer process: waits for 'go' on stdin, books ``n`` events, reports."""
    shards, per_event = DESIGNS[design]
    repository.BALANCE_SHARDS = shards
    batch = 1 if per_event else batch
    ledger = LedgerConsumer(Database(url), FeeRates(lambda c, m: 6000, lambda ch: 2000), "UTC")
    todo = events(n + MERCHANTS)
    ledger(todo[:MERCHANTS])  # connected, every merchant's account made and known
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for i in range(MERCHANTS, n + MERCHANTS, batch):
        ledger(todo[i : i + batch])
    print(json.dumps({"seconds": time.perf_counter() - start, "events": n}), flush=True)


def consumers(url: str, design: str, procs: int, n: int, batch: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", url, design, str(n), str(batch)]
    workers = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    for w in workers:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    samples: list[int] = []
    done = threading.Event()
    sampler = threading.Thread(target=sample_locks, args=(url, samples, done))
    sampler.start()
    start = time.perf_counter()
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    results = [json.loads(w.communicate()[0]) for w in workers]
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    booked = sum(r["events"] for r in results)
    return {
        "design": design,
        "consumers": procs,
        "events_per_s": round(booked / wall),
        "entries_per_s": round(booked * 5 / wall),
        "avg_backends_waiting_on_locks": round(sum(samples) / max(1, len(samples)), 3),
        "lock_samples": len(samples),
    }


def sample_locks(url: str, samples: list[int], done: threading.Event) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        while not done.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
            samples.append(int(row[0]) if row else 0)
            time.sleep(SAMPLE_S)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vouchers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="vouchers/events a transaction")
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--events", type=int, default=3_000, help="per consumer process")
    parser.add_argument("--designs", default="shards,one-row,per-event")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": common.machine_note()}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        out["sqlite"] = single(url, args.vouchers, args.batch)
    with postgres_server() as pg:
        out["postgres"] = single(pg.create_database("single"), args.vouchers, args.batch)
        out["postgres"]["server"] = f"PostgreSQL {pg.version}, fsync=off"
        out["consumers"] = []
        for design in args.designs.split(","):
            url = pg.create_database(design.replace("-", "_"))
            Database(url).migrate()
            n = args.events if design != "per-event" else max(2, args.events // 5)
            out["consumers"].append(consumers(url, design, args.consumers, n, args.batch // 4))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
