"""Read a day's NetsUnion clearing files (the zip of one CSV per batch, see ``bill.py``) into
recon's normalised table with DuckDB: every batch file unpacked (bounded), its title and
``#TRAILER`` read first, then all files in one pass (``#`` lines skipped), every column as
text, ``CNY100.00`` parsed exactly into fen, each row's first bad field named. The rows of each
file must add up to its trailer; a bill is imported whole or not at all.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import duckdb

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.bill import (
    COLUMNS,
    SYNTHETIC,
    TITLE,
    BillFormatError,
    Trailer,
    parse_trailer,
    unzip,
)
from paygrid.recon.bill_format import BillRefused, BillTotals

MAX_ZIP_BYTES = 2 * 1024**3
_MACROS = r"""
CREATE OR REPLACE TEMP MACRO nu_fen(s) AS
    CASE WHEN regexp_full_match(s, 'CNY(0|[1-9][0-9]{0,12})\.[0-9]{2}')
    THEN CAST(CAST(substr(s, 4) AS DECIMAL(18, 2)) * 100 AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO nu_time(s) AS try_strptime(s, '%Y-%m-%dT%H:%M:%S');
"""
_BAD_FIELD = """CASE
    WHEN nu_time(TrxDtTm) IS NULL THEN 'TrxDtTm'
    WHEN CAST(nu_time(TrxDtTm) AS DATE) <> DATE '{day}' THEN 'TrxDtTm'
    WHEN coalesce(TrxId, '') = '' THEN 'TrxId'
    WHEN coalesce(TrxCtgy, '') NOT IN ('{debit}', '{refund}') THEN 'TrxCtgy'
    WHEN TrxCtgy = '{refund}' AND coalesce(OriTrxId, '') = '' THEN 'OriTrxId'
    WHEN nu_fen(TrxAmt) IS NULL THEN 'TrxAmt'
    WHEN nu_fen(Fee) IS NULL THEN 'Fee'
    WHEN BizStsCd IS DISTINCT FROM '{ok}' THEN 'BizStsCd'
    WHEN SttlmDt IS DISTINCT FROM '{day}' THEN 'SttlmDt'
    WHEN InstgId IS DISTINCT FROM '{member}' THEN 'InstgId'
END"""
_NORMALISE = """
    CASE TrxCtgy WHEN '{debit}' THEN 'PAYMENT' ELSE 'REFUND' END AS kind,
    nu_time(TrxDtTm) - INTERVAL 8 HOUR AS trade_time,
    SysTrxId AS channel_trade_no,
    CASE TrxCtgy WHEN '{debit}' THEN TrxId ELSE OriTrxId END AS payment_ref,
    CASE WHEN TrxCtgy = '{refund}' THEN TrxId END AS refund_ref,
    nu_fen(TrxAmt) AS amount,
    CASE TrxCtgy WHEN '{debit}' THEN nu_fen(Fee) ELSE -nu_fen(Fee) END AS fee,
    'CNY' AS currency,
    BizStsCd AS status,
    InstgId AS channel_mchid,
    filename AS source_file,
    {bad} AS bad_field
"""
_COLUMNS = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in COLUMNS) + "}"


def import_bill(con: duckdb.DuckDBPyConnection, path: Path, day: date, table: str) -> BillTotals:
    """Create ``table`` (recon's normalised columns) from the clearing zip at ``path``."""
    if path.stat().st_size > MAX_ZIP_BYTES:
        raise BillRefused(path.name, 0, "", "the zip is too large")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            entries = unzip(path.read_bytes())
        except BillFormatError as exc:
            raise BillRefused(path.name, 0, "", str(exc)) from None
        if not entries:
            raise BillRefused(path.name, 0, "", "the zip holds no clearing file")
        files: dict[str, Trailer] = {}
        member = ""
        for number, (name, content) in enumerate(entries):
            out = Path(scratch) / f"batch{number:02d}.csv"
            out.write_bytes(content)
            member, trailer = _head_and_trailer(name, content, day, member)
            files[str(out)] = trailer
        return _read(con, path.name, files, day, member, table)


def _head_and_trailer(name: str, content: bytes, day: date, member: str) -> tuple[str, Trailer]:
    lines = content.decode("utf-8", "replace").splitlines()
    head = lines[0].split(",") if lines else []
    if len(head) != 5 or head[0] != TITLE or head[4] != SYNTHETIC or head[3] != day.isoformat():
        raise BillRefused(name, 1, "", f"not a clearing file of {day.isoformat()}")
    if member and head[1] != member:
        raise BillRefused(name, 1, "InstgId", "the files are of other members")
    if len(lines) < 3 or tuple(lines[1].split(",")) != COLUMNS:
        raise BillRefused(name, 2, "", "unexpected columns")
    try:
        return head[1], parse_trailer(lines[-1])
    except BillFormatError as exc:
        raise BillRefused(name, len(lines), "#TRAILER", str(exc)) from None


def _read(
    con: duckdb.DuckDBPyConnection,
    name: str,
    files: dict[str, Trailer],
    day: date,
    member: str,
    table: str,
) -> BillTotals:
    con.execute(_MACROS)
    codes = {"debit": wire.DEBIT_CATEGORY, "refund": wire.REFUND_CATEGORY}
    bad = _BAD_FIELD.format(day=day.isoformat(), ok=wire.BIZ_SUCCESS, member=member, **codes)
    select = _NORMALISE.format(bad=bad, **codes)
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    source = (
        f"read_csv([{listed}], delim=',', quote='\"', escape='\"', header=true, comment='#', "
        f"auto_detect=false, columns={_COLUMNS}, filename=true)"
    )
    try:
        con.execute(f"CREATE TEMP TABLE {table}_raw AS SELECT {select} FROM {source}")
    except duckdb.Error as exc:
        raise BillRefused(name, 0, "", f"not a NetsUnion clearing file ({exc})") from None
    found = con.execute(
        f"SELECT rowid, bad_field FROM {table}_raw WHERE bad_field IS NOT NULL ORDER BY rowid"
    ).fetchone()
    if found is not None:
        raise BillRefused(name, int(found[0]) + 1, str(found[1]), "missing or not a valid value")
    for file, trailer in files.items():
        _check_file(con, f"{table}_raw", name, file, trailer)
    con.execute(
        f"CREATE TEMP VIEW {table} AS SELECT * EXCLUDE (bad_field, source_file) FROM {table}_raw"
    )
    got = con.execute(
        f"""SELECT count(*),
            count(*) FILTER (WHERE kind = 'PAYMENT'),
            coalesce(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0),
            count(*) FILTER (WHERE kind = 'REFUND'),
            coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
            coalesce(sum(fee), 0)
        FROM {table}"""
    ).fetchone()
    assert got is not None
    return BillTotals(*(int(v) for v in got))


def _check_file(
    con: duckdb.DuckDBPyConnection, raw: str, name: str, file: str, trailer: Trailer
) -> None:
    got = con.execute(
        f"""SELECT count(*),
            count(*) FILTER (WHERE kind = 'PAYMENT'),
            coalesce(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0),
            count(*) FILTER (WHERE kind = 'REFUND'),
            coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
            coalesce(sum(fee) FILTER (WHERE kind = 'PAYMENT'), 0),
            coalesce(-sum(fee) FILTER (WHERE kind = 'REFUND'), 0)
        FROM {raw} WHERE source_file = ?""",
        [file],
    ).fetchone()
    assert got is not None
    made = Trailer(*(int(v) for v in got))
    if made != trailer:
        raise BillRefused(name, 0, "#TRAILER", f"a batch's lines make {made}, it says {trailer}")
