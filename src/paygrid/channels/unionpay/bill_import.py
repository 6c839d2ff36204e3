"""Read a UnionPay reconciliation zip (ZM/ZME, fixed width, GBK) into recon's normalised table.

DuckDB reads no GBK and slices text by characters, not bytes: each ZM record is cut by its byte
widths here (:func:`paygrid.channels.unionpay.zm.read_record`, checked: the exact length, a
separator between fields, GBK text), streamed as UTF-8 tab-separated cells to a scratch file,
then read by DuckDB in one pass like the other channels' bills: every column as text, amounts
whole fen (``交易金额`` digits; ``商户手续费`` a sign and 12 digits), each row's first bad
field named. A consume (交易类型 01) is a PAYMENT; a refund (04) or revoke (31) a REFUND under
its own orderId, its payment named through ``原交易查询流水号`` when the consume is in the same
file (else NULL: recon matches refunds by their own reference). orderIds are mapped back to
our references (parsing.py).

ZM has no totals line to check the rows against; every record must be whole and every value
valid. A ZME record (差错/调账) refuses the file: its field names are unverified and recon must
not pass over an adjustment unread (docs/unionpay.md).
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import duckdb

from paygrid.channels.unionpay import zm
from paygrid.recon.bill_format import BillRefused, BillTotals

MAX_ZIP_BYTES = 2 * 1024**3
CELLS = ("交易类型", "交易传输时间", "查询流水号", "商户订单号", "原交易查询流水号", "交易金额",
         "商户手续费", "商户代码")  # fmt: skip
_MACROS = r"""
CREATE OR REPLACE TEMP MACRO up_ref(s) AS
    regexp_replace(s, '^([a-z]{2,5})([0-9A-HJKMNP-TV-Z]{26})$', '\1_\2');
CREATE OR REPLACE TEMP MACRO up_time(s, y) AS try_strptime(y || s, '%Y%m%d%H%M%S');
"""
_BAD_FIELD = """CASE
    WHEN 交易类型 NOT IN ('01', '04', '31') THEN '交易类型'
    WHEN up_time(交易传输时间, '{year}') IS NULL
        OR CAST(up_time(交易传输时间, '{year}') AS DATE) <> DATE '{day}' THEN '交易传输时间'
    WHEN coalesce(查询流水号, '') = '' THEN '查询流水号'
    WHEN coalesce(商户订单号, '') = '' THEN '商户订单号'
    WHEN 交易类型 <> '01' AND coalesce(原交易查询流水号, '') = '' THEN '原交易查询流水号'
    WHEN NOT regexp_full_match(coalesce(交易金额, ''), '[0-9]{{12}}') THEN '交易金额'
    WHEN NOT regexp_full_match(coalesce(商户手续费, ''), '[+-][0-9]{{12}}') THEN '商户手续费'
    WHEN coalesce(商户代码, '') <> '{mer_id}' THEN '商户代码'
END"""
_NORMALISE = """
    CASE 交易类型 WHEN '01' THEN 'PAYMENT' ELSE 'REFUND' END AS kind,
    up_time(交易传输时间, '{year}') - INTERVAL 8 HOUR AS trade_time,
    CASE 交易类型 WHEN '01' THEN 查询流水号 ELSE 原交易查询流水号 END AS channel_trade_no,
    CASE 交易类型 WHEN '01' THEN up_ref(商户订单号) END AS payment_ref,
    CASE WHEN 交易类型 <> '01' THEN up_ref(商户订单号) END AS refund_ref,
    TRY_CAST(交易金额 AS BIGINT) AS amount,
    TRY_CAST(商户手续费 AS BIGINT) AS fee,
    'CNY' AS currency,
    'SUCCESS' AS status,
    商户代码 AS channel_mchid,
    查询流水号 AS query_id,
    原交易查询流水号 AS orig_query_id,
    {bad} AS bad_field
"""


def import_bill(con: duckdb.DuckDBPyConnection, path: Path, day: date, table: str) -> BillTotals:
    """Create ``table`` (recon's normalised columns) from the reconciliation zip at ``path``."""
    if path.stat().st_size > MAX_ZIP_BYTES:
        raise BillRefused(path.name, 0, "", "the zip is too large")
    try:
        zm_bytes, zme_bytes = zm.unzip(path.read_bytes())
    except zm.BillFormatError as exc:
        raise BillRefused(path.name, 0, "", str(exc)) from None
    for number, _ in zm.records(zme_bytes):
        raise BillRefused(path.name, number, "ZME", "adjustments (差错/调账) are not read yet")
    mer_id = _mer_id(path.name, zm_bytes)
    with tempfile.TemporaryDirectory() as scratch:
        cells = Path(scratch) / "zm.tsv"
        lines = _cells(path.name, zm_bytes, cells)
        return _read(con, path.name, cells, lines, day, mer_id, table)


def _mer_id(name: str, content: bytes) -> str:
    """The merchant of the first record (each record is checked against it)."""
    for number, line in zm.records(content):
        try:
            return zm.read_record(line)["商户代码"]
        except zm.BillFormatError as exc:
            raise BillRefused(name, number, "", str(exc)) from None
    return ""


def _cells(name: str, content: bytes, out: Path) -> list[int]:
    """Each record's cells as a UTF-8 TSV line; the file line numbers, in order."""
    numbers: list[int] = []
    with out.open("w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(CELLS) + "\n")
        for number, line in zm.records(content):
            try:
                values = zm.read_record(line)
            except zm.BillFormatError as exc:
                raise BillRefused(name, number, "", str(exc)) from None
            cells = [values[c] for c in CELLS]
            if any("\t" in c or "\n" in c for c in cells):
                raise BillRefused(name, number, "", "a control character in a field")
            f.write("\t".join(cells) + "\n")
            numbers.append(number)
    return numbers


def _read(
    con: duckdb.DuckDBPyConnection,
    name: str,
    cells: Path,
    numbers: list[int],
    day: date,
    mer_id: str,
    table: str,
) -> BillTotals:
    con.execute(_MACROS)
    bad = _BAD_FIELD.format(year=day.year, day=day.isoformat(), mer_id=mer_id)
    select = _NORMALISE.format(year=day.year, bad=bad)
    quoted = str(cells).replace("'", "''")
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in CELLS) + "}"
    source = (
        f"read_csv('{quoted}', delim='\t', quote='', header=true, auto_detect=false, "
        f"columns={columns}, null_padding=false)"
    )
    con.execute(f"CREATE TEMP TABLE {table}_raw AS SELECT {select} FROM {source}")
    found = con.execute(
        f"SELECT rowid, bad_field FROM {table}_raw WHERE bad_field IS NOT NULL "
        "ORDER BY rowid LIMIT 1"
    ).fetchone()
    if found is not None:
        raise BillRefused(name, numbers[int(found[0])], str(found[1]), "missing or not valid")
    con.execute(
        f"""CREATE TEMP VIEW {table} AS
        SELECT r.kind, r.trade_time, r.channel_trade_no,
            coalesce(r.payment_ref, p.payment_ref) AS payment_ref, r.refund_ref, r.amount,
            r.fee, r.currency, r.status, r.channel_mchid
        FROM {table}_raw r
        LEFT JOIN (SELECT query_id, payment_ref FROM {table}_raw WHERE kind = 'PAYMENT') p
            ON r.kind = 'REFUND' AND p.query_id = r.orig_query_id"""
    )
    got = con.execute(
        f"""SELECT count(*),
            count(*) FILTER (WHERE kind = 'PAYMENT'),
            coalesce(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0),
            count(*) FILTER (WHERE kind = 'REFUND'),
            coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
            coalesce(sum(fee), 0)
        FROM {table}_raw"""
    ).fetchone()
    assert got is not None
    return BillTotals(*(int(v) for v in got))
