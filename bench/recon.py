"""Reconciliation at scale: one business day's bill in a channel's real layout against paygrid's
records of the same day, with a seeded set of differences of every kind, beside three baselines
measured in the same run.

    .venv/bin/python bench/recon.py [--lines 10000000] [--channel wechatpay|alipay] [--seed 1]
        [--differences 100] [--memory-limit 4GB] [--skip-pandas] [--repeat 1] [--work DIR --keep]

Measured, each in a fresh process (its peak RSS is that phase's alone):
  read_csv     DuckDB's own read_csv of the same bill file, every column, one amount parsed
               (baseline; for Alipay the UTF-8 text the GBK zip was made from)
  reader       the channel's bill reader (``bill_import.import_bill``): validation included
  import       ``recon.bill_store.import_file``: sha256, the reader, the Parquet file, the row
  bare join    DuckDB full outer join of the same Parquet files with a minimal CASE (baseline)
  classify     ``recon.matching.classify`` on the same data: the tables loaded as
               ``recon.run`` loads the bill, ``classify()``, the differences read back
  pandas       a straightforward pandas merge (outer, indicator) of the same data (baseline)
The outcomes of ``classify`` must be exactly the injected differences: exit code 1 if not.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import importlib.util
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import common
import duckdb
from rich.console import Console
from rich.table import Table

from paygrid.channels import registry
from paygrid.channels.alipay import bill as ali
from paygrid.channels.alipay.sandbox.bill_writer import _csv_line, _GbkZipInfo, _head
from paygrid.channels.wechatpay import bill as wx
from paygrid.recon import bill_store
from paygrid.recon.matching import OUR_PAYMENTS, OUR_REFUNDS, classify
from paygrid.storage.database import Database, sqlite_url

CHANNELS = ("wechatpay", "alipay")  # the channels whose bill layout the bench writes
REFUND_EVERY = 20  # line i is a refund when i % 20 == 19: of the payment on the line before
PAY_KINDS = ("AMOUNT_MISMATCH", "FEE_MISMATCH", "STATUS_REPAIRED", "CHANNEL_ONLY", "CROSS_DAY")
REFUND_KINDS = ("AMOUNT_MISMATCH", "STATUS_REPAIRED", "CHANNEL_ONLY")
# what the minimal CASE of the baselines can tell apart
BARE_KINDS = ("PAYGRID_ONLY", "CHANNEL_ONLY", "AMOUNT_MISMATCH")
CHUNKS = 50  # the bill is written in this many pieces (the progress bar's steps)
COPY_LINES = (
    f"(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIM '{chr(31)}', NEW_LINE '\\r\\n')"
)
MANIFEST = "manifest.json"
SPILL_POLL_S = 0.1
MIB = 1024 * 1024
WX_APPID, WX_MCHID = "wx2421b1c4370ec43b", "1900000109"
ALI_PID = "2088102177846880"
GOODS = "测试商品"


# --- generation ---------------------------------------------------------------------------------
def _ids(values: list[int]) -> str:
    return ", ".join(map(str, values)) or "-1"


def _macros(n: int, seed: int, ppm: int, day: date, inject: dict[str, list[int]]) -> str:
    """DuckDB macros: every value of line i is a function of i and the seed, so the bill and
    paygrid's records are written apart and still agree (but for the injected lines)."""
    ids = {k: _ids(v) for k, v in inject.items()}
    return f"""
CREATE OR REPLACE TEMP MACRO amt(i) AS (hash(i, {seed}) % 100000 + 1)::BIGINT;
CREATE OR REPLACE TEMP MACRO refund_amt(i) AS
    CASE WHEN (i // {REFUND_EVERY}) % 2 = 0 THEN amt(i - 1) ELSE greatest(amt(i - 1) // 2, 1) END;
CREATE OR REPLACE TEMP MACRO fee_of(a) AS (a * {ppm} + 500000) // 1000000;
CREATE OR REPLACE TEMP MACRO yuan(f) AS (f::DECIMAL(18, 0) * 0.01)::VARCHAR;
CREATE OR REPLACE TEMP MACRO ref(prefix, i, salt) AS
    prefix || lpad(upper(to_hex(hash(i, {seed}, salt))), 16, '0') || lpad(i::VARCHAR, 10, '0');
CREATE OR REPLACE TEMP MACRO secs(i) AS (i * 86400) // {n};
CREATE OR REPLACE TEMP MACRO at_text(s) AS
    strftime(TIMESTAMP '{day}' + to_seconds(s), '%Y-%m-%d %H:%M:%S');
CREATE OR REPLACE TEMP MACRO lines(lo, hi) AS TABLE
SELECT i, r, payi, secs(i) AS s, secs(payi) AS pay_s, amt(payi) AS trade_total, total, refund,
    CASE WHEN r THEN -fee_of(refund - (i IN ({ids["R_AMOUNT_MISMATCH"]}))::INT)
        ELSE fee_of(total) + (i IN ({ids["P_FEE_MISMATCH"]}))::INT END AS fee
FROM (
    SELECT i, r, payi,
        CASE WHEN r THEN 0 ELSE amt(i) + (i IN ({ids["P_AMOUNT_MISMATCH"]}))::INT END AS total,
        CASE WHEN r THEN refund_amt(i) + (i IN ({ids["R_AMOUNT_MISMATCH"]}))::INT ELSE 0 END
            AS refund
    FROM (
        SELECT i, i % {REFUND_EVERY} = {REFUND_EVERY - 1} AS r,
            CASE WHEN i % {REFUND_EVERY} = {REFUND_EVERY - 1} THEN i - 1 ELSE i END AS payi
        FROM range(lo, hi) t(i)
    )
);
"""


# one bill line, every value as the channel's bill prints it
_WX_LINE = f"""concat_ws(',',
    '`' || at_text(s), '`{WX_APPID}', '`{WX_MCHID}', '`0', '`',
    '`420000' || lpad((hash(payi, 4) % 10000)::VARCHAR, 4, '0') || '{{ymd}}'
        || lpad(payi::VARCHAR, 10, '0'),
    '`' || ref('cho_', payi, 1),
    '`o' || lpad(upper(to_hex(hash(payi, 5))), 27, '0'),
    '`NATIVE', CASE WHEN r THEN '`REFUND' ELSE '`SUCCESS' END, '`OTHERS', '`CNY',
    '`' || yuan(total), '`0.00',
    CASE WHEN r THEN '`503' || lpad((hash(i, 6) % 10000000)::VARCHAR, 7, '0') || '{{ymd}}'
        || lpad(i::VARCHAR, 11, '0') ELSE '`0' END,
    CASE WHEN r THEN '`' || ref('rfd_', i, 3) ELSE '`0' END,
    '`' || yuan(refund), '`0.00',
    CASE WHEN r THEN '`ORIGINAL' ELSE '`' END, CASE WHEN r THEN '`SUCCESS' ELSE '`' END,
    '`{GOODS}', '`', '`' || yuan(fee) || '{"0" * (wx.FEE_DIGITS - 2)}', '`{{rate}}',
    '`' || yuan(total), '`' || yuan(refund), '`')"""
_T = chr(9)  # Alipay writes a TAB after long ids and text
_ALI_LINE = f"""concat_ws(',',
    '{{ymd}}2200' || lpad(payi::VARCHAR, 16, '0') || '{_T}',
    ref('cho_', payi, 1) || '{_T}',
    CASE WHEN r THEN '{ali.REFUND}{_T}' ELSE '{ali.PAYMENT}{_T}' END,
    '{GOODS}{_T}', at_text(pay_s), at_text(s), '{_T}', '{_T}', '{_T}', '{_T}',
    '1' || lpad((hash(payi, 7) % 90 + 10)::VARCHAR, 2, '0') || '****'
        || lpad((hash(payi, 8) % 10000)::VARCHAR, 4, '0') || '{_T}',
    yuan(CASE WHEN r THEN trade_total ELSE total END),
    yuan(CASE WHEN r THEN -refund ELSE total END),
    '0.00', '0.00', '0.00', '0.00', '0.00', '{_T}', '0.00', '0.00',
    CASE WHEN r THEN ref('rfd_', i, 3) ELSE '' END || '{_T}',
    yuan(-fee), '0.00', '{_T}')"""

_OUR_PAYMENTS = """
SELECT ref('cho_', i, 1) AS channel_ref, ref('pay_', i, 2) AS payment_id,
    'M' || lpad(i::VARCHAR, 15, '0') AS out_trade_no, amt(i) AS amount,
    CASE WHEN i IN ({status}) THEN 'PAYING' ELSE 'SUCCESS' END AS status,
    CASE WHEN i IN ({status}) THEN NULL WHEN i IN ({cross}) THEN DATE '{prev}' ELSE DATE '{day}'
        END AS paid_on,
    CASE WHEN i IN ({status}) THEN NULL
        WHEN i IN ({cross}) THEN TIMESTAMP '{day}' - INTERVAL 8 HOUR - to_seconds(1 + i % 600)
        ELSE TIMESTAMP '{day}' - INTERVAL 8 HOUR + to_seconds(secs(i)) END AS paid_at,
    false AS repaired
FROM range({n}) t(i) WHERE i % {every} <> {every} - 1 AND i NOT IN ({channel_only})
UNION ALL  -- PAYGRID_ONLY: paid on the day, on no line of the bill
SELECT ref('cho_', i, 1), ref('pay_', i, 2), 'M' || lpad(i::VARCHAR, 15, '0'), amt(i), 'SUCCESS',
    DATE '{day}', TIMESTAMP '{day}' - INTERVAL 8 HOUR + to_seconds(((i - {n}) * 86400) // {k}),
    false
FROM range({n}, {n} + {k}) t(i)
"""
_OUR_REFUNDS = """
SELECT ref('rfd_', i, 3) AS channel_ref, ref('rfd_', i, 3) AS refund_id,
    'R' || lpad(i::VARCHAR, 15, '0') AS out_refund_no, ref('pay_', i - 1, 2) AS payment_id,
    'M' || lpad((i - 1)::VARCHAR, 15, '0') AS out_trade_no, refund_amt(i) AS amount,
    CASE WHEN i IN ({status}) THEN 'PROCESSING' ELSE 'SUCCESS' END AS status,
    ref('cho_', i - 1, 1) AS payment_ref, false AS repaired
FROM range({n}) t(i) WHERE i % {every} = {every} - 1 AND i NOT IN ({channel_only})
UNION ALL  -- PAYGRID_ONLY: a refund accepted that day, on no line of the bill
SELECT ref('rfd_', i, 3), ref('rfd_', i, 3), 'R' || lpad(i::VARCHAR, 15, '0'),
    ref('pay_', j, 2), 'M' || lpad(j::VARCHAR, 15, '0'), greatest(amt(j) // 3, 1), 'SUCCESS',
    ref('cho_', j, 1), false
FROM (SELECT i, (i - {n} - {k}) * {every} AS j FROM range({n} + {k}, {n} + 2 * {k}) t(i))
"""


def _injected(n: int, k: int, seed: int) -> dict[str, list[int]]:
    """The lines given a difference, K of each kind, disjoint, chosen by the seed."""
    refunds = n // REFUND_EVERY
    payments = n - refunds
    if k * len(PAY_KINDS) > payments or k * len(REFUND_KINDS) > refunds:
        raise SystemExit(f"--lines {n} is too few for --differences {k} of each kind")
    rng = random.Random(seed)
    per = REFUND_EVERY - 1
    pay = [(p // per) * REFUND_EVERY + p % per for p in rng.sample(range(payments), 5 * k)]
    ref = [r * REFUND_EVERY + per for r in rng.sample(range(refunds), 3 * k)]
    out = {f"P_{kind}": sorted(pay[j * k : (j + 1) * k]) for j, kind in enumerate(PAY_KINDS)}
    out |= {f"R_{kind}": sorted(ref[j * k : (j + 1) * k]) for j, kind in enumerate(REFUND_KINDS)}
    return out


def _expected(
    con: duckdb.DuckDBPyConnection, n: int, k: int, inject: dict[str, list[int]]
) -> dict[str, dict[str, list[str]]]:
    """The references each injected difference must be reported under, by flow and outcome."""

    def refs(prefix: str, salt: int, lines: list[int]) -> list[str]:
        rows = con.execute(
            f"SELECT ref('{prefix}', i, {salt}) FROM unnest(?::BIGINT[]) t(i)", [lines]
        )
        return sorted(str(r[0]) for r in rows.fetchall())

    pay = {kind: refs("cho_", 1, inject[f"P_{kind}"]) for kind in PAY_KINDS}
    pay["PAYGRID_ONLY"] = refs("cho_", 1, list(range(n, n + k)))
    refund = {kind: refs("rfd_", 3, inject[f"R_{kind}"]) for kind in REFUND_KINDS}
    refund["PAYGRID_ONLY"] = refs("rfd_", 3, list(range(n + k, n + 2 * k)))
    return {"payments": pay, "refunds": refund}


def _append(dst: Any, part: Path) -> None:
    with part.open("rb") as src:
        shutil.copyfileobj(src, dst, 16 * MIB)
    part.unlink()


def _write_lines(
    con: duckdb.DuckDBPyConnection, line_sql: str, n: int, dst: Any, scratch: Path, advance: Any
) -> None:
    """The bill's lines in order, written by DuckDB's CSV writer a chunk at a time."""
    step = max(1, -(-n // CHUNKS))
    part = scratch / "part.csv"
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        con.execute(f"COPY (SELECT {line_sql} FROM lines({lo}, {hi})) TO '{part}' {COPY_LINES}")
        _append(dst, part)
        advance(hi - lo)


def _totals(con: duckdb.DuckDBPyConnection, n: int) -> dict[str, int]:
    row = con.execute(
        f"""SELECT count(*) FILTER (WHERE NOT r), coalesce(sum(total), 0),
            count(*) FILTER (WHERE r), coalesce(sum(refund), 0), coalesce(sum(fee), 0),
            coalesce(sum(trade_total) FILTER (WHERE NOT r), 0)
        FROM lines(0, {n})"""
    ).fetchone()
    assert row is not None
    names = ("payments", "paid", "refunds", "refunded", "fee", "trade_total")
    return dict(zip(names, (int(v) for v in row), strict=True))


def _write_wechatpay(
    con: duckdb.DuckDBPyConnection, work: Path, n: int, day: date, ppm: int, advance: Any
) -> dict[str, Path]:
    """The trade bill (bill_type ALL) as ``wechatpay.bill.write_trade_bill`` writes it."""
    path = work / f"wechatpay-tradebill-ALL-{day:%Y%m%d}.csv"
    line = _WX_LINE.format(ymd=f"{day:%Y%m%d}", rate=wx.rate_text(ppm))
    t = _totals(con, n)
    yuan = wx._yuan
    summary = [str(n), yuan(t["paid"]), yuan(t["refunded"]), yuan(0), wx._fee(t["fee"])]
    summary += [yuan(t["paid"]), yuan(t["refunded"])]
    with path.open("wb") as dst:
        dst.write((",".join(wx.ALL_COLUMNS) + "\r\n").encode())
        _write_lines(con, line, n, dst, work, advance)
        tail = ",".join(wx.SUMMARY_COLUMNS) + "\r\n" + ",".join("`" + v for v in summary)
        dst.write((tail + "\r\n").encode())
    return {"bill": path, "read_csv": path}


def _write_alipay(
    con: duckdb.DuckDBPyConnection, work: Path, n: int, day: date, advance: Any, zipping: Any
) -> dict[str, Path]:
    """The trade bill zip (业务明细 and 业务明细(汇总), GBK) as the sandbox's
    ``alipay.sandbox.bill_writer.write_bill_zip`` writes it."""
    start = datetime(day.year, day.month, day.day, tzinfo=ali.BEIJING)
    period = (start, start + timedelta(days=1))
    exported = ali.period_text(start + timedelta(days=1, hours=9))
    stem = ali.bill_file_stem(ALI_PID, day)
    t = _totals(con, n)
    yuan = ali.yuan_text
    detail = work / "detail-utf8.csv"  # read_csv's input: DuckDB reads no GBK
    with detail.open("wb") as dst:
        head = _head(ali.DETAIL_TITLE, ALI_PID, period, ali.DETAIL_START)
        dst.write(("\r\n".join([*head, _csv_line(ali.DETAIL_COLUMNS)]) + "\r\n").encode())
        _write_lines(con, _ALI_LINE.format(ymd=f"{day:%Y%m%d}"), n, dst, work, advance)
        tail = [
            ali.DETAIL_END,
            f"#交易合计：{t['payments']}笔，商家实收共{yuan(t['paid'])}元，商家优惠共0.00元",
            f"#退款合计：{t['refunds']}笔，商家实收退款共{yuan(-t['refunded'])}元，"
            "商家优惠退款共0.00元",
            f"#导出时间：[{exported}]",
        ]
        dst.write(("\r\n".join(tail) + "\r\n").encode())
    received, service_fee = t["paid"] - t["refunded"], -t["fee"]
    zero = yuan(0)
    values = [str(t["payments"]), str(t["refunds"]), yuan(t["paid"]), yuan(received), zero, zero]
    values += [zero, yuan(service_fee), zero, yuan(received + service_fee)]
    summary = _head(ali.SUMMARY_TITLE, ALI_PID, period, ali.SUMMARY_START)
    summary += [_csv_line(ali.SUMMARY_COLUMNS), _csv_line(["", "", *values])]
    summary += [_csv_line([ali.TOTAL_ROW, "", *values]), ali.SUMMARY_END]
    summary += [f"#导出时间：[{exported}]"]
    path = work / f"{stem}.csv.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        when = (start + timedelta(days=1, hours=9)).timetuple()[:6]
        info = _GbkZipInfo(f"{stem}_业务明细.csv", date_time=when)
        info.compress_type = zipfile.ZIP_DEFLATED
        _gbk_into(archive, info, detail, zipping)
        info = _GbkZipInfo(f"{stem}_业务明细(汇总).csv", date_time=when)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, ("\r\n".join(summary) + "\r\n").encode(ali.ENCODING))
    return {"bill": path, "read_csv": detail}


def _gbk_into(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: Path, zipping: Any) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    zipping(source.stat().st_size // MIB, 0)
    with source.open("rb") as src, archive.open(info, "w", force_zip64=True) as out:
        while chunk := src.read(8 * MIB):
            out.write(decoder.decode(chunk).encode(ali.ENCODING))
            zipping(None, len(chunk) // MIB)
        out.write(decoder.decode(b"", final=True).encode(ali.ENCODING))


def generate(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    """Write the day's bill and paygrid's records under ``work``; reuse them when ``work``
    already holds the same day (same lines, channel, seed and differences)."""
    spec = registry.BY_NAME[args.channel]
    params = {
        "channel": args.channel,
        "lines": args.lines,
        "seed": args.seed,
        "differences": args.differences,
        "day": args.day.isoformat(),
        "fee_rate_ppm": spec.fee_rate_ppm,
    }
    manifest = work / MANIFEST
    if manifest.exists():
        made: dict[str, Any] = json.loads(manifest.read_text())
        if made["params"] == params and all(Path(p).exists() for p in made["files"].values()):
            console.print(f"reusing the day generated in {work}")
            made["reused"] = True
            return made
    n, k, day = args.lines, args.differences, args.day
    inject = _injected(n, k, args.seed)
    started = time.perf_counter()
    with duckdb.connect(config={"threads": 2}) as con, common.progress(console) as progress:
        con.execute(_macros(n, args.seed, spec.fee_rate_ppm, day, inject))
        task = progress.add_task(f"{args.channel} bill lines", total=n)

        def advance(lines: int) -> None:
            progress.advance(task, lines)

        if args.channel == "wechatpay":
            files = _write_wechatpay(con, work, n, day, spec.fee_rate_ppm, advance)
        else:
            zip_task = progress.add_task("into the GBK zip, MiB", total=None)

            def zipping(total: int | None, mib: int) -> None:
                if total is not None:
                    progress.update(zip_task, total=total)
                progress.advance(zip_task, mib)

            files = _write_alipay(con, work, n, day, advance, zipping)
        ours = progress.add_task("paygrid's payments and refunds", total=2)
        ids = {key: _ids(v) for key, v in inject.items()}
        rows: dict[str, int] = {}
        for name, sql, kind in (
            ("payments", _OUR_PAYMENTS, "P_"),
            ("refunds", _OUR_REFUNDS, "R_"),
        ):
            query = sql.format(
                n=n,
                k=k,
                every=REFUND_EVERY,
                day=day,
                prev=day - timedelta(days=1),
                status=ids[kind + "STATUS_REPAIRED"],
                channel_only=ids[kind + "CHANNEL_ONLY"],
                cross=ids.get(kind + "CROSS_DAY", "-1"),
            )
            files[f"ours_{name}"] = work / f"ours_{name}.parquet"
            con.execute(f"COPY ({query}) TO '{files[f'ours_{name}']}' (FORMAT parquet)")
            got = con.execute(f"SELECT count(*) FROM '{files[f'ours_{name}']}'").fetchone()
            rows[name] = int(got[0]) if got else 0
            progress.advance(ours)
        expected = _expected(con, n, k, inject)
    refunds = n // REFUND_EVERY
    made = {
        "params": params,
        "files": {name: str(path) for name, path in files.items()},
        "bytes": {name: path.stat().st_size for name, path in files.items()},
        "payments": n - refunds,
        "refunds": refunds,
        "ours_rows": rows,
        "expected": expected,
        "seconds": round(time.perf_counter() - started, 2),
        "reused": False,
    }
    manifest.write_text(json.dumps(made, indent=1))
    return made


# --- the measured phases, each in a fresh process ------------------------------------------------
def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _connect(memory_limit: str) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": bill_store.DUCKDB_THREADS,  # as the import sets it (recon.run sets none)
        "memory_limit": memory_limit,
    }
    return duckdb.connect(config=config)


def _settings(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    row = con.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit'), "
        "current_setting('temp_directory')"
    ).fetchone()
    assert row is not None
    return {"threads": row[0], "memory_limit": row[1], "temp_directory": row[2]}


def _sql(path: str | Path) -> str:
    return str(path).replace("'", "''")


def phase_read_csv(channel: str, path: str, memory_limit: str) -> dict[str, Any]:
    """DuckDB's own read_csv into a table: every column as text (the bill's values carry a
    backtick or a TAB, so no type would fit), the order amount parsed, the lines that are no
    rows (summary, footer) skipped."""
    if channel == "wechatpay":
        columns, skip, amount = wx.ALL_COLUMNS, 0, "CAST(substr(订单金额, 2) AS DECIMAL(18, 2))"
    else:
        columns, skip, amount = ali.DETAIL_COLUMNS, 4, 'CAST("订单金额（元）" AS DECIMAL(18, 2))'
    types = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"
    with _connect(memory_limit) as con:
        settings = _settings(con)
        start = time.perf_counter()
        con.execute(
            f"CREATE TEMP TABLE raw AS SELECT *, {amount} AS amount FROM read_csv('{_sql(path)}', "
            f"delim=',', quote='\"', escape='\"', header=true, skip={skip}, auto_detect=false, "
            f"new_line='\\r\\n', columns={types}, ignore_errors=true)"
        )
        row = con.execute("SELECT count(*) FROM raw").fetchone()
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": int(row[0]) if row else 0,
        "duckdb": settings,
        "peak_rss_mib": _peak_mib(),
    }


def phase_reader(channel: str, path: str, day: str, memory_limit: str) -> dict[str, Any]:
    """The channel's reader alone, on a connection set as ``bill_store`` sets its own."""
    reader = registry.BY_NAME[channel].bill_reader()
    with _connect(memory_limit) as con:
        settings = _settings(con)
        start = time.perf_counter()
        totals = reader(con, Path(path), date.fromisoformat(day), "bill")
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": totals.lines,
        "duckdb": settings,
        "peak_rss_mib": _peak_mib(),
    }


def phase_import(
    channel: str, path: str, day: str, data_dir: str, memory_limit: str
) -> dict[str, Any]:
    """``bill_store.import_file`` as `paygrid recon import` runs it, on a fresh SQLite database."""
    bill_store.DUCKDB_MEMORY_LIMIT = (
        memory_limit  # the same limit as the baselines (default: its own)
    )
    db = Database(sqlite_url(Path(data_dir)))
    db.migrate()
    reader = registry.BY_NAME[channel].bill_reader()
    business = date.fromisoformat(day)
    start = time.perf_counter()
    bill_store.file_sha256(Path(path))
    sha_s = time.perf_counter() - start
    start = time.perf_counter()
    imported = bill_store.import_file(
        db, Path(data_dir), channel, business, Path(path), reader, source="bench", by="bench"
    )
    seconds = time.perf_counter() - start
    current = bill_store.current_bill(db, channel, business)
    assert current is not None and not imported.already
    db.dispose()
    return {
        "seconds": seconds,
        "sha256_seconds": sha_s,
        "rows": imported.totals.lines,
        "parquet": str(Path(data_dir) / current["stored_path"]),
        "duckdb": {"threads": bill_store.DUCKDB_THREADS, "memory_limit": memory_limit},
        "peak_rss_mib": _peak_mib(),
    }


_BARE = """CREATE TEMP TABLE bare_{flow} AS
SELECT coalesce(o.channel_ref, b.{key}) AS ref,
    CASE WHEN b.{key} IS NULL THEN 'PAYGRID_ONLY' WHEN o.channel_ref IS NULL THEN 'CHANNEL_ONLY'
        WHEN o.amount <> b.amount THEN 'AMOUNT_MISMATCH' ELSE 'MATCHED' END AS outcome
FROM read_parquet('{ours}') o
FULL OUTER JOIN (SELECT {key}, amount FROM read_parquet('{bill}') WHERE kind = '{kind}') b
    ON o.channel_ref = b.{key}"""


def _counted(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    rows = con.execute(f"SELECT outcome, count(*) FROM {table} GROUP BY outcome").fetchall()
    return {str(o): int(c) for o, c in sorted(rows)}


def phase_bare_join(files: dict[str, str], memory_limit: str) -> dict[str, Any]:
    """The baseline: one full outer join per flow straight from the Parquet files, the minimal
    CASE, into a table; then the counts."""
    flows = (
        ("pay", "payment_ref", "PAYMENT", "ours_payments"),
        ("refund", "refund_ref", "REFUND", "ours_refunds"),
    )
    with _connect(memory_limit) as con:
        settings = _settings(con)
        start = time.perf_counter()
        for flow, key, kind, ours in flows:
            con.execute(
                _BARE.format(
                    flow=flow,
                    key=key,
                    kind=kind,
                    ours=_sql(files[ours]),
                    bill=_sql(files["bill_parquet"]),
                )
            )
        counts = {"payments": _counted(con, "bare_pay"), "refunds": _counted(con, "bare_refund")}
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "counts": counts, "duckdb": settings, "peak_rss_mib": _peak_mib()}


def _load_ours(con: duckdb.DuckDBPyConnection, table: str, ddl: str, parquet: str) -> None:
    """A stand-in for ``recon.run``'s read of paygrid's database: the same table, filled from
    Parquet (the columns both have, so a column added to the table stays NULL)."""
    con.execute(ddl)
    have = {
        str(r[0])
        for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{_sql(parquet)}')").fetchall()
    }
    names = [str(r[0]) for r in con.execute(f"DESCRIBE {table}").fetchall() if str(r[0]) in have]
    cols = ", ".join(names)
    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM read_parquet('{_sql(parquet)}')")


def phase_classify(files: dict[str, str], day: str, ppm: int, memory_limit: str) -> dict[str, Any]:
    """paygrid's classify-join: the bill table as ``recon.run`` creates it, paygrid's tables,
    ``classify()``, then the differences and the matched totals read back as ``recon.run`` does."""
    with _connect(memory_limit) as con:
        settings = _settings(con)
        start = time.perf_counter()
        con.execute(  # a view, as recon.run makes it: the bill is read where the join needs it
            f"CREATE TEMP VIEW bill AS SELECT * FROM read_parquet('{_sql(files['bill_parquet'])}')"
        )
        _load_ours(con, "our_payments", OUR_PAYMENTS, files["ours_payments"])
        _load_ours(con, "our_refunds", OUR_REFUNDS, files["ours_refunds"])
        loaded = time.perf_counter()
        classify(con, day, ppm)
        classified = time.perf_counter()
        found: list[list[str]] = []
        for flow, table in (("payments", "pay_flow"), ("refunds", "refund_flow")):
            cursor = con.execute(f"SELECT * FROM {table} WHERE outcome <> 'MATCHED'")
            names = [d[0] for d in cursor.description or ()]
            for row in cursor.fetchall():
                values = dict(zip(names, row, strict=True))
                found.append([flow, str(values["outcome"]), str(values["ref"])])
        counts = {"payments": _counted(con, "pay_flow"), "refunds": _counted(con, "refund_flow")}
        end = time.perf_counter()
    return {
        "seconds": end - start,
        "load_seconds": loaded - start,
        "classify_seconds": classified - loaded,
        "differences_seconds": end - classified,
        "counts": counts,
        "found": found,
        "duckdb": settings,
        "peak_rss_mib": _peak_mib(),
    }


def phase_pandas(files: dict[str, str], memory_limit: str) -> dict[str, Any]:
    """The straightforward way: every file into a DataFrame, one outer merge per flow with
    ``indicator=True``, the minimal CASE with ``numpy.select``, the counts."""
    pd: Any = importlib.import_module("pandas")
    np: Any = importlib.import_module("numpy")
    with _connect(memory_limit) as con:
        start = time.perf_counter()
        bill = con.execute(f"SELECT * FROM read_parquet('{_sql(files['bill_parquet'])}')").df()
        ours = {
            name: con.execute(f"SELECT * FROM read_parquet('{_sql(files['ours_' + name])}')").df()
            for name in ("payments", "refunds")
        }
    loaded = time.perf_counter()
    counts = {}
    for name, key, kind in (
        ("payments", "payment_ref", "PAYMENT"),
        ("refunds", "refund_ref", "REFUND"),
    ):
        merged = ours[name].merge(
            bill[bill["kind"] == kind],
            how="outer",
            left_on="channel_ref",
            right_on=key,
            indicator=True,
            suffixes=("_ours", "_bill"),
        )
        outcome = np.select(
            [
                merged["_merge"] == "left_only",
                merged["_merge"] == "right_only",
                merged["amount_ours"] != merged["amount_bill"],
            ],
            list(BARE_KINDS),
            default="MATCHED",
        )
        counts[name] = {
            str(k): int(v) for k, v in sorted(pd.Series(outcome).value_counts().items())
        }
        del merged, outcome
    end = time.perf_counter()
    return {
        "seconds": end - loaded,
        "load_seconds": loaded - start,
        "counts": counts,
        "pandas": pd.__version__,
        "peak_rss_mib": _peak_mib(),
    }


def _child_setup(cwd: str) -> None:
    """A phase's process: its own directory, so that DuckDB's default spill directory
    (``.tmp``, relative) is its own and is measured; stdout silenced (DuckDB's progress bar)."""
    os.chdir(cwd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)


def _spill_mib(stop: threading.Event, peak: list[int]) -> None:
    spill = Path(".tmp")
    while not stop.wait(SPILL_POLL_S):
        try:
            size = sum(f.stat().st_size for f in spill.rglob("*") if f.is_file())
        except OSError:  # a file went away while being counted
            continue
        peak[0] = max(peak[0], size)


def _measured(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    stop, peak = threading.Event(), [0]
    watcher = threading.Thread(target=_spill_mib, args=(stop, peak), daemon=True)
    watcher.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        out = fn(*args)
    finally:
        stop.set()
        watcher.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU of the whole phase (all DuckDB threads, the setup too): steadier than the wall clock
    # on a machine that other work shares
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    out["cpu_seconds"] = round(cpu, 2)
    out["spilled_mib"] = round(peak[0] / MIB)
    return out


def _in_fresh_process(
    work: Path, name: str, fn: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    cwd = work / f"phase-{name}"
    cwd.mkdir(exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=_child_setup, initargs=(str(cwd),)
    ) as pool:
        out = pool.submit(_measured, fn, *args).result()
    shutil.rmtree(cwd, ignore_errors=True)
    return out


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of a phase's runs, the fastest, with the highest peak RSS and spill of them all."""
    best = dict(min(runs, key=lambda r: float(r["seconds"])))
    best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    best["spilled_mib"] = max(r["spilled_mib"] for r in runs)
    best["seconds_of_each_run"] = [round(float(r["seconds"]), 2) for r in runs]
    best["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
    return best


def measure(
    args: argparse.Namespace, work: Path, files: dict[str, str], console: Console, pandas: bool
) -> dict[str, dict[str, Any]]:
    """Every phase, ``--repeat`` rounds one after the other (pandas in the first only)."""
    day, limit, channel = args.day.isoformat(), args.memory_limit, args.channel
    ppm = registry.BY_NAME[channel].fee_rate_ppm
    runs: dict[str, list[dict[str, Any]]] = {}
    with console.status("") as status:

        def run(name: str, fn: Callable[..., dict[str, Any]], *a: Any) -> None:
            status.update(f"round {len(runs.get(name, [])) + 1}/{args.repeat}: {name}")
            runs.setdefault(name, []).append(_in_fresh_process(work, name, fn, *a))

        for round_ in range(args.repeat):
            run("read_csv", phase_read_csv, channel, files["read_csv"], limit)
            run("reader", phase_reader, channel, files["bill"], day, limit)
            data_dir = work / f"data-{round_}"
            shutil.rmtree(data_dir, ignore_errors=True)
            data_dir.mkdir()
            run(
                "import",
                phase_import,
                channel,
                files["bill"],
                day,
                str(data_dir),
                limit,
            )
            files["bill_parquet"] = runs["import"][-1]["parquet"]
            run("bare_join", phase_bare_join, files, limit)
            run("classify", phase_classify, files, day, ppm, limit)
            if pandas and round_ == 0:
                run("pandas", phase_pandas, files, limit)
    return {name: _fastest(r) for name, r in runs.items()}


# --- checks, figures and the report --------------------------------------------------------------
def expected_counts(made: dict[str, Any], bare: bool) -> dict[str, dict[str, int]]:
    """Outcome counts of classify (or, with ``bare``, of the minimal CASE) for the day made."""
    out: dict[str, dict[str, int]] = {}
    for flow, total in (("payments", made["payments"]), ("refunds", made["refunds"])):
        injected = {kind: len(refs) for kind, refs in made["expected"][flow].items()}
        in_bill = total - sum(v for kind, v in injected.items() if kind != "PAYGRID_ONLY")
        if bare:
            in_bill += sum(v for kind, v in injected.items() if kind not in BARE_KINDS)
            injected = {kind: v for kind, v in injected.items() if kind in BARE_KINDS}
        out[flow] = dict(sorted({**injected, "MATCHED": in_bill}.items()))
    return out


def differences_found(made: dict[str, Any], classified: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, dict[str, list[str]]] = {"payments": {}, "refunds": {}}
    for flow, outcome, ref in classified["found"]:
        found[flow].setdefault(outcome, []).append(ref)
    exact = all(
        sorted(found[flow].get(kind, [])) == refs
        for flow in found
        for kind, refs in made["expected"][flow].items()
    ) and all(kind in made["expected"][flow] for flow in found for kind in found[flow])
    return {
        "exact": exact and classified["counts"] == expected_counts(made, bare=False),
        "expected": expected_counts(made, bare=False),
        "found": classified["counts"],
    }


def figures(made: dict[str, Any], phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    lines = made["params"]["lines"]
    for phase in phases.values():
        phase["lines_per_s"] = round(lines / phase["seconds"]) if phase.get("seconds") else None
        phase["seconds"] = round(phase["seconds"], 3) if phase.get("seconds") else None
        for key in [k for k, v in phase.items() if k.endswith("_seconds") and isinstance(v, float)]:
            phase[key] = round(phase[key], 3)
    read_csv = phases["read_csv"]["lines_per_s"]
    bare = phases["bare_join"]["seconds"]
    classified = phases["classify"]
    return {
        "import lines/s / read_csv lines/s": common.ratio(
            phases["import"]["lines_per_s"], read_csv, 3
        ),
        "reader lines/s / read_csv lines/s": common.ratio(
            phases["reader"]["lines_per_s"], read_csv, 3
        ),
        "classify-join s / bare join s": common.ratio(classified["seconds"], bare, 2),
        "classify() alone s / bare join s": common.ratio(classified["classify_seconds"], bare, 2),
        "pandas merge s / bare join s": common.ratio(
            (phases.get("pandas") or {}).get("seconds"), bare, 2
        ),
        # the same by CPU time, for a machine that other work shares
        "read_csv CPU s / import CPU s": common.ratio(
            phases["read_csv"]["cpu_seconds"], phases["import"]["cpu_seconds"], 3
        ),
        "classify-join CPU s / bare join CPU s": common.ratio(
            classified["cpu_seconds"], phases["bare_join"]["cpu_seconds"], 2
        ),
    }


REPORT_ROWS = (  # phase, label, its ratio
    ("read_csv", "DuckDB read_csv (baseline)", None),
    ("reader", "paygrid reader, validation included", "reader lines/s / read_csv lines/s"),
    ("import", "paygrid import_file (sha256+reader+Parquet)", "import lines/s / read_csv lines/s"),
    ("bare_join", "DuckDB bare classify-join (baseline)", None),
    ("classify", "paygrid classify-join", "classify-join s / bare join s"),
    ("pandas", "pandas merge (baseline)", "pandas merge s / bare join s"),
)


def report(console: Console, result: dict[str, Any]) -> None:
    phases, ratios = result["phases"], result["ratios"]
    made = result["generated"]
    table = Table(
        title=f"recon at scale: {result['channel']}, {result['lines']:,} bill lines "
        f"against {sum(made['ours_rows'].values()):,} paygrid records"
    )
    for name in ("phase", "seconds", "lines/s", "ratio", "CPU s", "peak RSS MiB", "spilled MiB"):
        table.add_column(name, justify="left" if name == "phase" else "right")
    for key, label, ratio_key in REPORT_ROWS:
        phase = phases.get(key)
        if phase is None:
            table.add_row(label, "skipped")
            continue
        table.add_row(
            label,
            f"{phase['seconds']:.2f}",
            f"{phase['lines_per_s']:,}",
            "" if ratio_key is None else f"{ratios[ratio_key]}×",
            f"{phase['cpu_seconds']:.1f}",
            f"{phase['peak_rss_mib']:,.0f}",
            f"{phase['spilled_mib']:,}",
        )
        if key == "classify":
            parts = f"  load {phase['load_seconds']:.2f} + classify() "
            parts += (
                f"{phase['classify_seconds']:.2f} + read back {phase['differences_seconds']:.2f}"
            )
            alone = f"{ratios['classify() alone s / bare join s']}× alone"
            table.add_row(parts, "", "", alone)
    console.print(table)
    checks = Table(title="differences injected and found (classify)")
    for name in ("flow", "outcome", "expected", "found"):
        checks.add_column(name)
    diff = result["differences"]
    for flow, counts in diff["expected"].items():
        for outcome, count in counts.items():
            got = diff["found"].get(flow, {}).get(outcome, 0)
            checks.add_row(
                flow, outcome, f"{count:,}", f"{got:,}" + ("" if got == count else "  ✗")
            )
    console.print(checks)
    goals = result["goals"]
    console.print(
        f"goals: import ≥ 0.5× read_csv: {_yes(goals['import >= 0.5x read_csv'])}; "
        f"classify-join ≤ 2× bare join: {_yes(goals['classify-join <= 2x bare join'])}; "
        f"differences found exactly: {_yes(diff['exact'])}"
    )
    console.print(
        f"by CPU time: import {ratios['read_csv CPU s / import CPU s']}× read_csv's speed, "
        f"classify-join {ratios['classify-join CPU s / bare join CPU s']}× the bare join's time; "
        f"load average before {result['machine_before']['load_average_1_5_15']}, after "
        f"{result['machine_after']['load_average_1_5_15']} ({result['machine_after']['cpus']} CPUs)"
    )
    console.print(
        f"duckdb {result['duckdb_version']}, {result['duckdb']}; peak RSS is each "
        "phase's own process; files read from the page cache"
    )
    console.print(f"result: {result['result_file']}")


def _yes(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]NO[/red]"


@contextmanager
def _work_dir(given: Path | None, keep: bool) -> Iterator[Path]:
    path = given or Path(tempfile.mkdtemp(prefix="paygrid-bench-recon-"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if not keep and given is None:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000_000, help="bill lines of the day")
    parser.add_argument("--channel", choices=CHANNELS, default=CHANNELS[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--differences", type=int, default=100, help="injected, of each kind")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 30))
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    parser.add_argument(
        "--memory-limit",
        default=bill_store.DUCKDB_MEMORY_LIMIT,
        help="DuckDB's memory_limit for every phase (default: bill_store's)",
    )
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument(
        "--work",
        type=Path,
        help="where the day is written (kept; reused "
        "when it holds the same day); default a temporary directory",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds; each phase's fastest is reported (pandas runs in the first round only)",
    )
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    pandas = not args.skip_pandas and importlib.util.find_spec("pandas") is not None
    if not args.skip_pandas and not pandas:
        console.print("pandas is not installed (`.venv/bin/pip install pandas`): skipped")
    before = common.machine_note()
    with _work_dir(args.work, args.keep) as work:
        made = generate(args, work, console)
        phases = measure(args, work, dict(made["files"]), console, pandas)
    day, limit, channel = args.day.isoformat(), args.memory_limit, args.channel
    classified = phases["classify"]
    differences = differences_found(made, classified)
    found = classified.pop("found")
    bare_expected = expected_counts(made, bare=True)
    baselines_agree = phases["bare_join"]["counts"] == bare_expected and (
        "pandas" not in phases or phases["pandas"]["counts"] == bare_expected
    )
    rows_read = {name: phases[name]["rows"] for name in ("read_csv", "reader", "import")}
    ratios = figures(made, phases)
    import_ratio = ratios["import lines/s / read_csv lines/s"]
    classify_ratio = ratios["classify-join s / bare join s"]
    made_view = {k: v for k, v in made.items() if k not in ("expected", "files")}
    result = {
        "bench": "recon",
        "channel": channel,
        "lines": args.lines,
        "day": day,
        "seed": args.seed,
        "differences_per_kind": args.differences,
        "generated": made_view,
        "phases": phases,
        "ratios": ratios,
        "goals": {
            "import >= 0.5x read_csv": import_ratio is not None and import_ratio >= 0.5,
            "classify-join <= 2x bare join": classify_ratio is not None and classify_ratio <= 2,
        },
        "differences": differences,
        "differences_not_matched_found": len(found),
        "baselines_agree": baselines_agree,
        "baseline_counts_expected": bare_expected,
        "rows_read": rows_read,
        "duckdb_version": duckdb.__version__,
        "duckdb": {"threads": bill_store.DUCKDB_THREADS, "memory_limit": limit},
        "peak_rss_mib": {
            "bench process (generation)": _peak_mib(),
            "largest phase": max(p["peak_rss_mib"] for p in phases.values()),
        },
        "machine_before": before,
        "machine_after": common.machine_note(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"recon-{channel}-{args.lines}.json"
    result["result_file"] = common.shown(path)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    report(console, result)
    ok = (
        differences["exact"]
        and baselines_agree
        and all(v == args.lines for v in rows_read.values())
    )
    if not ok:
        console.print(
            "[red]the run did not find exactly the injected differences[/red] "
            f"(baselines agree: {baselines_agree}, rows read: {rows_read})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
