"""Read an Alipay trade bill (业务明细, the zip of two GBK CSV files) into recon's normalised
table. DuckDB reads no GBK: the detail file is transcoded to UTF-8 on its way out of the zip
(:mod:`paygrid.channels.alipay.gbk`: streamed, bounded), then read in one pass like WeChat
Pay's: every column as text, the TAB after long ids stripped, yuan parsed exactly into fen,
each row's first bad field named. The ``#`` lines after the rows (the end marker, 交易合计,
退款合计, 导出时间) are the only lines DuckDB's reader sets aside; the rows must add up to
them and to the summary file's 合计.
"""

from __future__ import annotations

import tempfile
import zipfile
from datetime import date
from pathlib import Path

import duckdb

from paygrid.channels.alipay import gbk
from paygrid.channels.alipay.bill import (
    _PAYMENT_TOTAL,
    _REFUND_TOTAL,
    DETAIL_COLUMNS,
    DETAIL_START,
    DETAIL_TITLE,
    MAX_ZIP_ENTRIES,
    SUMMARY_TITLE,
    BillFormatError,
    _head_fields,
    _read_summary,
)
from paygrid.kernel.money import MoneyError, parse_major
from paygrid.recon.bill_format import BillRefused, BillTotals

MAX_DETAIL_BYTES = 8 * 1024**3  # a 10-million-line day is about 2 GB of GBK
MAX_HEAD_LINES = 16
_MACROS = r"""
CREATE OR REPLACE TEMP MACRO ali_t(s) AS trim(s, chr(9) || ' ');
CREATE OR REPLACE TEMP MACRO ali_fen(s) AS
    CASE WHEN regexp_full_match(ali_t(s), '-?[0-9]{1,15}(\.[0-9]{1,2}0*)?')
    THEN CAST(CAST(ali_t(s) AS DECIMAL(18, 2)) * 100 AS BIGINT) END;
CREATE OR REPLACE TEMP MACRO ali_time(s) AS try_strptime(ali_t(s), '%Y-%m-%d %H:%M:%S');
"""
_BAD_FIELD = """CASE
    WHEN ali_time(完成时间) IS NULL THEN '完成时间'
    WHEN CAST(ali_time(完成时间) AS DATE) <> DATE '{day}' THEN '完成时间'
    WHEN coalesce(ali_t(支付宝交易号), '') = '' THEN '支付宝交易号'
    WHEN coalesce(ali_t(商户订单号), '') = '' THEN '商户订单号'
    WHEN coalesce(ali_t(业务类型), '') NOT IN ('交易', '退款') THEN '业务类型'
    WHEN ali_fen("订单金额（元）") IS NULL THEN '订单金额（元）'
    WHEN ali_fen("商家实收（元）") IS NULL THEN '商家实收（元）'
    WHEN ali_fen("服务费（元）") IS NULL THEN '服务费（元）'
    WHEN ali_t(业务类型) = '退款' AND coalesce(ali_t("退款批次号/请求号"), '') = ''
        THEN '退款批次号/请求号'
END"""
_NORMALISE = """
    CASE ali_t(业务类型) WHEN '交易' THEN 'PAYMENT' ELSE 'REFUND' END AS kind,
    ali_time(完成时间) - INTERVAL 8 HOUR AS trade_time,
    ali_t(支付宝交易号) AS channel_trade_no,
    ali_t(商户订单号) AS payment_ref,
    CASE WHEN ali_t(业务类型) = '退款' THEN ali_t("退款批次号/请求号") END AS refund_ref,
    CASE ali_t(业务类型) WHEN '交易' THEN ali_fen("订单金额（元）")
        ELSE -ali_fen("商家实收（元）") END AS amount,
    -ali_fen("服务费（元）") AS fee,
    'CNY' AS currency,
    'SUCCESS' AS status,
    '{mchid}' AS channel_mchid,
    ali_fen("商家实收（元）") AS received,
    {bad} AS bad_field
"""
_COLUMNS = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in DETAIL_COLUMNS) + "}"


def import_bill(con: duckdb.DuckDBPyConnection, path: Path, day: date, table: str) -> BillTotals:
    """Create ``table`` (recon's normalised columns) from the bill zip at ``path``."""
    with tempfile.TemporaryDirectory() as scratch:
        detail, head, summary = _unpack(path, Path(scratch))
        try:
            account, _, _ = _head_fields(head)
            summary_account, total = _read_summary(summary)
        except BillFormatError as exc:
            raise BillRefused(path.name, 0, "", str(exc)) from None
        if summary_account != account:
            raise BillRefused(path.name, 0, "#账号", "the two files are of other accounts")
        pid = account.removesuffix("0156")
        return _read_detail(con, path.name, detail, len(head), day, pid, table, total)


def _read_detail(
    con: duckdb.DuckDBPyConnection,
    name: str,
    detail: Path,
    skip: int,
    day: date,
    pid: str,
    table: str,
    total: dict[str, str],
) -> BillTotals:
    con.execute(_MACROS)
    rejects = f"{table}_rejects"
    select = _NORMALISE.format(mchid=pid, bad=_BAD_FIELD.format(day=day.isoformat()))
    source = _read_csv(detail, skip, rejects)
    try:
        con.execute(f"CREATE TEMP TABLE {table}_raw AS SELECT {select} FROM {source}")
    except duckdb.Error as exc:
        raise BillRefused(name, 0, "", f"not an Alipay trade bill ({exc})") from None
    footer_line, footer = _footer(con, rejects, name)
    bad = con.execute(f"SELECT min(rowid) FROM {table}_raw WHERE bad_field IS NOT NULL").fetchone()
    if bad and bad[0] is not None:
        line, field = con.execute(
            f"SELECT rowid, bad_field FROM {table}_raw WHERE rowid = {int(bad[0])}"
        ).fetchone() or (0, "")
        raise BillRefused(name, skip + 2 + int(line), str(field), "missing or not a valid value")
    totals = _check(con, f"{table}_raw", footer, total, name, footer_line)
    # a view, not a second copy of every line: the Parquet file is written from it
    con.execute(
        f"CREATE TEMP VIEW {table} AS SELECT * EXCLUDE (bad_field, received) FROM {table}_raw"
    )
    return totals


def _unpack(path: Path, scratch: Path) -> tuple[Path, list[str], str]:
    """(the detail file as UTF-8 on disk, its head comment lines, the summary file's text)."""
    try:
        archive = zipfile.ZipFile(path, metadata_encoding="gbk")
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BillRefused(path.name, 0, "", f"not a zip file ({exc})") from None
    with archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        if len(entries) > MAX_ZIP_ENTRIES:
            raise BillRefused(path.name, 0, "", f"the zip holds {len(entries)} files")
        detail_out = scratch / "detail.csv"
        kinds: dict[str, object] = {}
        for info in entries:
            if info.file_size > MAX_DETAIL_BYTES:
                raise BillRefused(path.name, 0, "", f"{info.filename} is too large")
            first = _transcode(archive, info, scratch / "entry.csv", path.name)
            if first.startswith(DETAIL_TITLE):
                (scratch / "entry.csv").replace(detail_out)
                kinds["detail"] = first
            elif first.startswith(SUMMARY_TITLE):
                kinds["summary"] = (scratch / "entry.csv").read_text()
        if set(kinds) != {"detail", "summary"}:
            raise BillRefused(path.name, 0, "", "the zip must hold a 业务明细 and its (汇总)")
    head = _head(detail_out)
    return detail_out, head, str(kinds["summary"])


def _transcode(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, name: str) -> str:
    """The entry as UTF-8 at ``out`` (:mod:`paygrid.channels.alipay.gbk`); its first line."""
    try:
        with archive.open(info) as src:
            gbk.transcode(src, out, info.filename, name, MAX_DETAIL_BYTES)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BillRefused(name, 0, "", f"{info.filename} does not unzip ({exc})") from None
    with out.open(encoding="utf-8") as f:
        return f.readline()


def _head(detail: Path) -> list[str]:
    """The comment lines before the header, up to the start marker."""
    head: list[str] = []
    with detail.open(encoding="utf-8") as f:
        for line in f:
            head.append(line.rstrip("\r\n"))
            if line.startswith(DETAIL_START) or len(head) > MAX_HEAD_LINES:
                break
    if not head[-1].startswith(DETAIL_START):
        raise BillRefused(detail.name, 0, "", "no 业务明细列表 start marker")
    return head


def _read_csv(path: Path, skip: int, rejects: str) -> str:
    quoted = str(path).replace("'", "''")
    return (
        f"read_csv('{quoted}', delim=',', quote='\"', escape='\"', header=true, skip={skip}, "
        f"auto_detect=false, columns={_COLUMNS}, store_rejects=true, "
        f"rejects_table='{rejects}', rejects_scan='{rejects}_scan')"
    )


def _footer(con: duckdb.DuckDBPyConnection, rejects: str, name: str) -> tuple[int, list[str]]:
    """The ``#`` lines after the rows: every line the reader set aside must be one of them."""
    rows = con.execute(
        f"SELECT line, any_value(csv_line) FROM {rejects} GROUP BY line ORDER BY line"
    ).fetchall()
    texts = [str(text).strip("\r\n") for _, text in rows]
    for (line, _), text in zip(rows, texts, strict=True):
        if not text.startswith("#"):
            raise BillRefused(name, int(line), "", "not a row of the bill")
    if not rows:
        raise BillRefused(name, 0, "#交易合计", "no totals after the rows")
    return int(rows[0][0]), texts


def _check(
    con: duckdb.DuckDBPyConnection,
    table: str,
    footer: list[str],
    total: dict[str, str],
    name: str,
    line: int,
) -> BillTotals:
    got = con.execute(
        f"""SELECT count(*),
            count(*) FILTER (WHERE kind = 'PAYMENT'),
            coalesce(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0),
            count(*) FILTER (WHERE kind = 'REFUND'),
            coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
            coalesce(sum(fee), 0),
            coalesce(sum(received) FILTER (WHERE kind = 'PAYMENT'), 0),
            coalesce(sum(received) FILTER (WHERE kind = 'REFUND'), 0)
        FROM {table}"""
    ).fetchone()
    assert got is not None
    lines, payments, paid, refunds, refunded, fee, received, received_back = (int(v) for v in got)
    expected = {
        "#交易合计": (payments, received, _PAYMENT_TOTAL),
        "#退款合计": (refunds, received_back, _REFUND_TOTAL),
    }
    for field, (count, amount, pattern) in expected.items():
        match = next((m for m in map(pattern.match, footer) if m), None)
        if match is None:
            raise BillRefused(name, line, field, "missing")
        if (int(match.group(1)), _fen(match.group(2), name, line)) != (count, amount):
            raise BillRefused(name, line, field, f"the rows make {count} lines, {amount} fen")
    summary = {
        "交易订单总笔数": (int(total.get("交易订单总笔数") or -1), payments),
        "退款订单总笔数": (int(total.get("退款订单总笔数") or -1), refunds),
        "服务费（元）": (-_fen(total.get("服务费（元）", ""), name, 0), fee),
    }
    for field, (given, made) in summary.items():
        if given != made:
            raise BillRefused(name, 0, field, f"the 汇总 file says {given}, the rows make {made}")
    return BillTotals(lines, payments, paid, refunds, refunded, fee)


def _fen(text: str, name: str, line: int) -> int:
    try:
        return parse_major(text, "CNY")
    except MoneyError as exc:
        raise BillRefused(name, line, "", str(exc)) from None
