"""paygrid's side of a reconciliation run out of its own database: a business day of N successful
payments (their channel orders and state transitions too, and a fifth as many on each
neighbouring day) in a fresh SQLite or PostgreSQL database, read into DuckDB by the loader
``recon.run`` uses, beside the database's own fastest read of the same rows in the same run.

    .venv/bin/python bench/recon_ours.py [--records 10000000] [--database sqlite|postgres]
        [--repeat 1] [--work DIR]

Measured, each in a fresh process (its peak RSS is that phase's alone):
  raw read   the loader's own query, its rows read and dropped: SQLite's cursor (fetchmany),
             PostgreSQL's COPY ... TO STDOUT (baseline)
  loader     ``recon.run.load_ours``: the same rows into DuckDB's ``our_payments``
The loaded table must hold exactly the day's payments, their amounts summed: exit code 1 if not.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import UTC, date
from pathlib import Path
from typing import Any

import common
import duckdb
from rich.console import Console
from rich.table import Table

from paygrid.kernel.clock import DEFAULT_BUSINESS_ZONE
from paygrid.ops.scratch import postgres_server
from paygrid.recon import run as recon_run
from paygrid.reports.merchant_bill import day_bounds
from paygrid.storage.database import Database, sqlite_url

CHANNEL = "bench"  # a channel name of the bench's own: the loader filters by it
MCHID = "bench_merchant"
NEIGHBOUR_SHARE = 5  # each neighbouring day holds records / NEIGHBOUR_SHARE payments
BATCH = 200_000  # rows per insert batch while filling
MIB = 1024 * 1024

# One row per payment; the day's N are numbered 0..N-1, the day before and after follow.
_SOURCE = """
SELECT i,
    'pay_' || lpad(i::VARCHAR, 14, '0') AS payment_id,
    'ord_' || i AS out_trade_no,
    100 + (i * 7919) % 100000 AS amount,
    TIMESTAMP '{start}' + to_microseconds(({span} * ((i - {first}) % {n}) // {n})::BIGINT)
        + INTERVAL ({offset}) DAY AS paid_at
FROM range({first}, {first} + {n}) t(i)
"""


# --- filling the database ----------------------------------------------------------------------
def _days(records: int) -> list[tuple[int, int, int]]:
    """(first number, count, day offset) of the day and its two neighbours."""
    side = max(1, records // NEIGHBOUR_SHARE)
    return [(0, records, 0), (records, side, -1), (records + side, side, 1)]


def _source(day: date, first: int, n: int, offset: int) -> str:
    start, end = day_bounds(day, DEFAULT_BUSINESS_ZONE)
    span = int((end - start).total_seconds() * 1_000_000)
    naive = start.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return _SOURCE.format(start=naive, span=span, first=first, n=n, offset=offset)


_PAYMENT_COLS = (
    "payment_id, mchid, out_trade_no, amount, currency, description, notify_url, method, status, "
    "expire_at, request_hash, refunded_amount, refunding_amount, paid_at, cashier_token, "
    "created_at, updated_at, version, confirmed_amount, confirmed_currency"
)
_ORDER_COLS = (
    "order_id, payment_id, channel, method, channel_ref, status, channel_trade_no, "
    "created_at, updated_at"
)
_TRANSITION_COLS = "payment_id, from_status, to_status, cause, at"


def _rows_sql(source: str, ts: Callable[[str], str]) -> dict[str, str]:
    """The three tables' rows from one source, timestamps written by ``ts``."""
    return {
        "payments": f"""SELECT payment_id, '{MCHID}', out_trade_no, amount, 'CNY', 'bench',
            'http://127.0.0.1/notify', 'native', 'SUCCESS', {ts("paid_at + INTERVAL 2 HOUR")},
            repeat('0', 64), 0, 0, {ts("paid_at")}, 'tok_' || i,
            {ts("paid_at - INTERVAL 1 MINUTE")}, {ts("paid_at")}, 3, amount, 'CNY'
            FROM ({source})""",
        "channel_orders": f"""SELECT 'co_' || i, payment_id, '{CHANNEL}', 'native', 'P' || i,
            'SUCCESS', '4200' || i, {ts("paid_at - INTERVAL 1 MINUTE")}, {ts("paid_at")}
            FROM ({source})""",
        "payment_transitions": f"""SELECT payment_id, 'PENDING', 'SUCCESS', 'callback',
            {ts("paid_at")} FROM ({source})""",
    }


_COLS = {
    "payments": _PAYMENT_COLS,
    "channel_orders": _ORDER_COLS,
    "payment_transitions": _TRANSITION_COLS,
}


def _merchant(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO merchants (mchid, name, status, fee_rate_ppm, methods, created_at) "
            f"VALUES ('{MCHID}', 'bench', 'ACTIVE', 6000, 'native', '2026-01-01 00:00:00')"
        )


def fill_sqlite(path: Path, day: date, records: int, advance: Callable[[int], None]) -> None:
    """SQLite has no bulk path from DuckDB: batches of executemany, one transaction a table."""
    db = Database(sqlite_url(path))
    db.migrate()
    _merchant(db)
    db.dispose()
    ts = lambda c: f"strftime({c}, '%Y-%m-%d %H:%M:%S.%f')"  # noqa: E731  SQLAlchemy's text form
    con = duckdb.connect()
    target = sqlite3.connect(path / "paygrid.db")
    target.execute("PRAGMA synchronous=OFF")  # a scratch database: filled once, then read
    indexes = [  # built after the rows (sorted once), not row by row
        str(r[1])
        for r in target.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        if r[1] is not None
    ]
    for ddl in indexes:
        target.execute("DROP INDEX " + ddl.split(" ON ")[0].split()[-1])
    for first, n, offset in _days(records):
        for table, sql in _rows_sql(_source(day, first, n, offset), ts).items():
            cols = _COLS[table]
            marks = ", ".join("?" for _ in cols.split(","))
            cursor = con.execute(sql)
            with target:
                while batch := cursor.fetchmany(BATCH):
                    target.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", batch)
                    advance(len(batch))
    for ddl in indexes:
        target.execute(ddl)
    target.execute("ANALYZE")
    target.close()


def fill_postgres(
    url: str, work: Path, day: date, records: int, advance: Callable[[int], None]
) -> None:
    """DuckDB writes CSV, PostgreSQL's COPY reads it."""
    import psycopg

    db = Database(url)
    db.migrate()
    _merchant(db)
    db.dispose()
    ts = lambda c: f"strftime({c}, '%Y-%m-%d %H:%M:%S.%f+00')"  # noqa: E731
    con = duckdb.connect()
    csv = work / "rows.csv"
    with psycopg.connect(url) as pg:
        for first, n, offset in _days(records):
            for table, sql in _rows_sql(_source(day, first, n, offset), ts).items():
                con.execute(f"COPY ({sql}) TO '{csv}' (HEADER false)")
                with (
                    pg.cursor() as cur,
                    cur.copy(f"COPY {table} ({_COLS[table]}) FROM STDIN (FORMAT csv)") as copy,
                    csv.open("rb") as f,
                ):
                    while block := f.read(4 * MIB):
                        copy.write(block)
                pg.commit()
                advance(n)
        pg.execute("ANALYZE")
        pg.commit()
    csv.unlink()


# --- the measured phases -----------------------------------------------------------------------
def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _day_query_sql(db: Database, day: date) -> str:
    start, end = day_bounds(day, DEFAULT_BUSINESS_ZONE)
    query = recon_run.day_payments_query(CHANNEL, start, end)
    return str(query.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))


def phase_raw(url: str, day_text: str) -> dict[str, Any]:
    """The loader's query, read by the database's fastest path and dropped."""
    db = Database(url)
    sql = _day_query_sql(db, date.fromisoformat(day_text))
    rows = 0
    start = time.perf_counter()
    if db.is_sqlite:
        raw = sqlite3.connect(db.engine.url.database or "")
        cursor = raw.execute(sql)
        while batch := cursor.fetchmany(BATCH):
            rows += len(batch)
        raw.close()
    else:
        import psycopg

        plain = db.url.replace("postgresql+psycopg://", "postgresql://")
        with (
            psycopg.connect(plain) as pg,
            pg.cursor() as cur,
            cur.copy(f"COPY ({sql}) TO STDOUT") as copy,
        ):
            for block in copy:
                rows += bytes(block).count(b"\n")
    seconds = time.perf_counter() - start
    db.dispose()
    return {"seconds": seconds, "rows": rows, "peak_rss_mib": _peak_mib()}


def phase_loader(url: str, day_text: str) -> dict[str, Any]:
    """``recon.run.load_ours`` into a DuckDB as ``recon.run`` opens it."""
    db = Database(url)
    day = date.fromisoformat(day_text)
    start = time.perf_counter()
    with duckdb.connect(config=recon_run.DUCKDB_CONFIG) as con:
        con.execute(
            "CREATE TEMP TABLE bill (kind VARCHAR, payment_ref VARCHAR, refund_ref VARCHAR)"
        )
        recon_run.load_ours(con, db, CHANNEL, day, DEFAULT_BUSINESS_ZONE)
        seconds = time.perf_counter() - start
        got = con.execute(
            "SELECT count(*), sum(amount), count(DISTINCT paid_on), min(paid_on) FROM our_payments"
        ).fetchone()
    assert got is not None
    db.dispose()
    return {
        "seconds": seconds,
        "rows": int(got[0]),
        "amount": int(got[1] or 0),
        "dates": [int(got[2]), str(got[3])],
        "peak_rss_mib": _peak_mib(),
    }


def _measured(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = fn(*args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = round(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2
    )
    return out


def _in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_measured, fn, *args).result()


def expected(records: int) -> dict[str, int]:
    con = duckdb.connect()
    row = con.execute(
        f"SELECT count(*), sum(100 + (i * 7919) % 100000) FROM range({records}) t(i)"
    ).fetchone()
    assert row is not None
    return {"rows": int(row[0]), "amount": int(row[1])}


# --- the run -----------------------------------------------------------------------------------
@contextmanager
def _database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield sqlite_url(work)
        return
    with postgres_server() as server:
        yield server.create_database("bench_recon_ours")


def run(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    day = args.day
    total = sum(n for _, n, _ in _days(args.records)) * 3
    with _database(args.database, work) as url:
        started = time.perf_counter()
        marker = work / "filled.json"
        made = {"database": args.database, "records": args.records, "day": day.isoformat()}
        reused = (
            args.database == "sqlite" and marker.exists() and json.loads(marker.read_text()) == made
        )
        if not reused:
            with common.progress(console) as progress:
                task = progress.add_task(f"filling {args.database}", total=total)
                advance: Callable[[int], None] = lambda k: progress.advance(task, k)  # noqa: E731
                if args.database == "sqlite":
                    fill_sqlite(work, day, args.records, advance)
                else:
                    fill_postgres(url, work, day, args.records, advance)
            marker.write_text(json.dumps(made))
        filled = time.perf_counter() - started
        phases: dict[str, list[dict[str, Any]]] = {"raw": [], "loader": []}
        for _ in range(args.repeat):
            for name, fn in (("raw", phase_raw), ("loader", phase_loader)):
                with console.status(f"{name} …"):
                    phases[name].append(_in_fresh_process(fn, url, day.isoformat()))
    best = {name: min(runs, key=lambda r: float(r["seconds"])) for name, runs in phases.items()}
    for name, runs in phases.items():
        best[name]["seconds_of_each_run"] = [round(float(r["seconds"]), 2) for r in runs]
        best[name]["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    want = expected(args.records)
    loaded = best["loader"]
    exact = (loaded["rows"], loaded["amount"], loaded["dates"]) == (
        want["rows"],
        want["amount"],
        [1, day.isoformat()],
    )
    return {
        "bench": "recon_ours",
        "database": args.database,
        "records": args.records,
        "fill_seconds": round(filled, 1),
        "reused_database": reused,
        "phases": best,
        "rows_per_s": {n: round(p["rows"] / p["seconds"]) for n, p in best.items()},
        "ratio loader s / raw read s": common.ratio(loaded["seconds"], best["raw"]["seconds"], 2),
        "expected": want,
        "exact": exact,
        "machine": common.machine_note(),
    }


def report(console: Console, result: dict[str, Any]) -> None:
    table = Table(
        title=f"paygrid's records out of {result['database']} ({result['records']:,} of the day)"
    )
    for col in ("phase", "seconds", "rows/s", "CPU s", "peak RSS MiB", "runs"):
        table.add_column(col)
    for name, phase in result["phases"].items():
        table.add_row(
            name,
            f"{phase['seconds']:.2f}",
            f"{result['rows_per_s'][name]:,}",
            f"{phase['cpu_seconds']:.1f}",
            f"{phase['peak_rss_mib']:,.0f}",
            ", ".join(str(s) for s in phase["seconds_of_each_run"]),
        )
    console.print(table)
    console.print(
        f"loader / raw read: {result['ratio loader s / raw read s']}×; "
        f"the day's rows and amounts exact: {result['exact']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000, help="payments of the day")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 30))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    parser.add_argument(
        "--work",
        type=Path,
        help="where the SQLite database lives, reused when it holds the same day",
    )
    args = parser.parse_args()
    console = Console()
    keep = args.work is not None
    with nullcontext(args.work) if keep else tempfile.TemporaryDirectory() as where:
        work = Path(where)
        work.mkdir(parents=True, exist_ok=True)
        result = run(args, work, console)
    report(console, result)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"recon-ours-{args.database}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    console.print(f"figures: {common.shown(out)}")
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
