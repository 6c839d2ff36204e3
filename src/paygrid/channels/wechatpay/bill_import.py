"""Read a WeChat Pay trade bill (交易账单, bill_type ALL) into recon's normalised table with
DuckDB, in one pass over the file: every column as text, the backtick before each value
stripped, yuan parsed exactly into fen (``parse_major``'s grammar: a DECIMAL cast alone rounds
'0.005'), each row's first bad field named. The two summary lines at the end are the only
lines DuckDB's reader sets aside (7 columns, not 27); the rows must add up to them. Anything
else refuses the file whole, naming its line and field.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from paygrid.channels.wechatpay.bill import ALL_COLUMNS, SUMMARY_COLUMNS
from paygrid.kernel.money import MoneyError, parse_major
from paygrid.recon.bill_format import BillRefused, BillTotals

STATES = ("SUCCESS", "REFUND", "REVOKED")
_MACROS = r"""
CREATE OR REPLACE TEMP MACRO wx_bt(s) AS CASE WHEN starts_with(s, '`') THEN substr(s, 2) END;
CREATE OR REPLACE TEMP MACRO wx_fen(s) AS
    CASE WHEN regexp_full_match(s, '`-?[0-9]{1,15}(\.[0-9]{1,2}0*)?')
    THEN CAST(CAST(substr(s, 2) AS DECIMAL(18, 2)) * 100 AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO wx_time(s) AS try_strptime(wx_bt(s), '%Y-%m-%d %H:%M:%S');
"""
# The first bad field of a row, in the order a person reads the row; NULL when it is whole.
_BAD_FIELD = """CASE
    WHEN wx_time(交易时间) IS NULL THEN '交易时间'
    WHEN CAST(wx_time(交易时间) AS DATE) <> DATE '{day}' THEN '交易时间'
    WHEN coalesce(wx_bt(微信订单号), '') = '' THEN '微信订单号'
    WHEN coalesce(wx_bt(商户订单号), '') = '' THEN '商户订单号'
    WHEN coalesce(wx_bt(交易状态), '') NOT IN ('SUCCESS', 'REFUND', 'REVOKED') THEN '交易状态'
    WHEN coalesce(wx_bt(货币种类), '') = '' THEN '货币种类'
    WHEN wx_fen(订单金额) IS NULL THEN '订单金额'
    WHEN wx_fen(应结订单金额) IS NULL THEN '应结订单金额'
    WHEN wx_fen(退款金额) IS NULL THEN '退款金额'
    WHEN wx_fen(申请退款金额) IS NULL THEN '申请退款金额'
    WHEN wx_fen(手续费) IS NULL THEN '手续费'
    WHEN wx_bt(交易状态) <> 'SUCCESS' AND coalesce(wx_bt(商户退款单号), '0') IN ('0', '')
        THEN '商户退款单号'
END"""
_NORMALISE = """
    CASE wx_bt(交易状态) WHEN 'SUCCESS' THEN 'PAYMENT' ELSE 'REFUND' END AS kind,
    wx_time(交易时间) - INTERVAL 8 HOUR AS trade_time,
    wx_bt(微信订单号) AS channel_trade_no,
    wx_bt(商户订单号) AS payment_ref,
    CASE WHEN wx_bt(交易状态) <> 'SUCCESS' THEN wx_bt(商户退款单号) END AS refund_ref,
    CASE wx_bt(交易状态) WHEN 'SUCCESS' THEN wx_fen(订单金额) ELSE wx_fen(申请退款金额) END
        AS amount,
    wx_fen(手续费) AS fee,
    CASE wx_bt(货币种类) WHEN '人民币' THEN 'CNY' ELSE wx_bt(货币种类) END AS currency,
    CASE WHEN wx_bt(交易状态) = 'SUCCESS' THEN 'SUCCESS' ELSE wx_bt(退款状态) END AS status,
    wx_bt(商户号) AS channel_mchid,
    {bad} AS bad_field
"""
_COLUMNS = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in ALL_COLUMNS) + "}"


def _read_csv(path: Path, rejects: str | None) -> str:
    options = (
        f"'{_quoted(path)}', delim=',', quote='\"', escape='\"', header=true, "
        f"auto_detect=false, new_line='\\r\\n', columns={_COLUMNS}"
    )
    if rejects:
        options += f", store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan'"
    else:
        options += ", null_padding=true"
    return f"read_csv({options})"


def import_bill(con: duckdb.DuckDBPyConnection, path: Path, day: date, table: str) -> BillTotals:
    """Create ``table`` (recon's normalised columns) from the bill at ``path`` for business
    date ``day``; raise BillRefused naming the line and field of the first thing wrong."""
    _check_header(path)
    con.execute(_MACROS)
    rejects = f"{table}_rejects"
    select = _NORMALISE.format(bad=_BAD_FIELD.format(day=day.isoformat()))
    try:
        con.execute(
            f"CREATE TEMP TABLE {table}_raw AS SELECT {select} FROM {_read_csv(path, rejects)}"
        )
    except duckdb.Error as exc:
        raise BillRefused(path.name, 0, "", f"not a WeChat Pay trade bill ({exc})") from None
    header_line, summary = _summary(con, rejects, path.name)
    totals = _totals(con, f"{table}_raw")
    if header_line != totals.lines + 2:
        raise BillRefused(path.name, header_line, "总交易单数", "summary is not after the rows")
    bad = con.execute(f"SELECT count(*) FROM {table}_raw WHERE bad_field IS NOT NULL").fetchone()
    if bad and bad[0]:
        raise _first_bad(con, path, day)
    _check_summary(summary, totals, path.name, header_line + 1)
    # a view, not a second copy of every line: the Parquet file is written from it
    con.execute(f"CREATE TEMP VIEW {table} AS SELECT * EXCLUDE (bad_field) FROM {table}_raw")
    return totals


def _check_header(path: Path) -> None:
    with path.open("rb") as f:
        first = f.readline(64 * 1024)
    header = first.decode("utf-8", "replace").removeprefix("\ufeff").rstrip("\r\n")
    if header.split(",") != list(ALL_COLUMNS):
        raise BillRefused(path.name, 1, "", "not a WeChat Pay trade bill (bill_type ALL) header")


def _summary(con: duckdb.DuckDBPyConnection, rejects: str, name: str) -> tuple[int, dict[str, str]]:
    """The summary header and row: the only lines the reader may set aside, the last two."""
    rows = con.execute(
        f"SELECT line, min(error_type), any_value(csv_line) FROM {rejects} "
        "GROUP BY line ORDER BY line"
    ).fetchall()
    if len(rows) < 2:
        raise BillRefused(name, 0, "总交易单数", "no summary lines at the end")
    (head_line, _, head), (row_line, _, row) = rows[-2], rows[-1]
    if len(rows) > 2 or row_line != head_line + 1:
        line, error, _ = rows[0]
        raise BillRefused(name, int(line), "", f"not a row of the bill ({error})")
    if head.strip("\r\n\ufeff").split(",") != list(SUMMARY_COLUMNS):
        raise BillRefused(name, int(head_line), "总交易单数", "not the summary header")
    values = row.strip("\r\n").split(",")
    if len(values) != len(SUMMARY_COLUMNS) or not all(v.startswith("`") for v in values):
        raise BillRefused(name, int(row_line), "总交易单数", "not the summary row")
    return int(head_line), dict(zip(SUMMARY_COLUMNS, (v[1:] for v in values), strict=True))


def _totals(con: duckdb.DuckDBPyConnection, table: str) -> BillTotals:
    row = con.execute(
        f"""SELECT count(*),
            count(*) FILTER (WHERE kind = 'PAYMENT'),
            coalesce(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0),
            count(*) FILTER (WHERE kind = 'REFUND'),
            coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
            coalesce(sum(fee), 0)
        FROM {table}"""
    ).fetchone()
    assert row is not None
    return BillTotals(*(int(v) for v in row))


def _check_summary(summary: dict[str, str], totals: BillTotals, name: str, line: int) -> None:
    try:
        given = {
            "总交易单数": int(summary["总交易单数"]),
            "订单总金额": parse_major(summary["订单总金额"], "CNY"),
            "申请退款总金额": parse_major(summary["申请退款总金额"], "CNY"),
            "手续费总金额": parse_major(summary["手续费总金额"], "CNY"),
        }
    except (MoneyError, ValueError) as exc:
        raise BillRefused(name, line, "总交易单数", f"unreadable summary ({exc})") from None
    made = {
        "总交易单数": totals.lines,
        "订单总金额": totals.payment_amount,
        "申请退款总金额": totals.refund_amount,
        "手续费总金额": totals.fee,
    }
    for field, value in given.items():
        if value != made[field]:
            raise BillRefused(
                name, line, field, f"summary says {value}, the rows add up to {made[field]}"
            )


def _first_bad(con: duckdb.DuckDBPyConnection, path: Path, day: date) -> BillRefused:
    """The refusal path only: read again in file order to name the first bad row's line."""
    bad = _BAD_FIELD.format(day=day.isoformat())
    con.execute(  # file order is kept (preserve_insertion_order): rowid 0 is line 2
        "CREATE OR REPLACE TEMP TABLE wx_in_order AS "
        f"SELECT * FROM {_read_csv(path, None)} WHERE 费率备注 IS NOT NULL"
    )
    found = con.execute(
        f"SELECT rowid + 2 AS line, {bad} AS field FROM wx_in_order "
        f"WHERE {bad} IS NOT NULL ORDER BY line LIMIT 1"
    ).fetchone()
    if found is None:
        return BillRefused(path.name, 0, "", "a row is not whole")
    line, field = found
    why = f"not on {day.isoformat()}" if field == "交易时间" else "missing or not a valid value"
    return BillRefused(path.name, int(line), str(field), why)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
