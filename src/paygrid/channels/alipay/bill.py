"""Alipay trade bill (业务明细账单, bill_type=trade): the real layout and its parser.

The download is a zip ``<PID>0156_<yyyyMMdd>.csv.zip`` holding two GBK CSV files:
``<PID>0156_<yyyyMMdd>_业务明细.csv`` (one line per payment 交易 and per refund 退款) and
``<PID>0156_<yyyyMMdd>_业务明细(汇总).csv`` (per store, then 合计). Both open with ``#`` comment
lines (title, account, period, a dashed start marker), end with a dashed end marker and ``#``
totals; long ids are followed by a TAB so spreadsheets keep them whole. Amounts are yuan with two
decimals, refunds negative in 商家实收, 服务费 negative where Alipay charges it and positive where
a refund gives it back.

Parsed lines are :class:`BillLine` with exact fen (``parse_major``, never a float): PAYMENT
amount = 订单金额, REFUND amount = the refunded 商家实收 as a positive number, ``fee`` the fee
charged (positive) or returned (negative), as WeChat Pay's parser reports them.

The sandbox writes the same layout with ``sandbox/bill_writer.py``, from these constants.
Domain-level: standard library, the money kernel and the channel port types only.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from paygrid.channels.ports import BillLine
from paygrid.kernel.money import Money, MoneyError, format_major, parse_major

BEIJING = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
ENCODING = "gbk"
ACCOUNT_SUFFIX = "0156"  # the account number is the PID followed by 0156 (人民币)
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024  # bound on each file inside the zip (zip bombs)
MAX_ZIP_ENTRIES = 8

DETAIL_TITLE = "#支付宝业务明细查询"
SUMMARY_TITLE = "#支付宝业务汇总查询"
DETAIL_START = "#" + "-" * 41 + "业务明细列表" + "-" * 40
DETAIL_END = "#" + "-" * 41 + "业务明细列表结束" + "-" * 36
SUMMARY_START = "#" + "-" * 41 + "业务汇总列表" + "-" * 40
SUMMARY_END = "#" + "-" * 40 + "业务汇总列表结束" + "-" * 37
PAYMENT = "交易"
REFUND = "退款"
TOTAL_ROW = "合计"

DETAIL_COLUMNS: tuple[str, ...] = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
)
# text columns carry a TAB after the value, as Alipay writes them
TABBED_COLUMNS = frozenset(DETAIL_COLUMNS[i] for i in (0, 1, 2, 3, 6, 7, 8, 9, 10, 18, 21, 24))
_PAYMENT_TOTAL = re.compile(r"^#交易合计：(\d+)笔，商家实收共(-?\d+\.\d{2})元")
_REFUND_TOTAL = re.compile(r"^#退款合计：(\d+)笔，商家实收退款共(-?\d+\.\d{2})元")
_ACCOUNT = re.compile(r"^#账号：\[(\d+)\]")


class BillFormatError(ValueError):
    """A bill that does not follow the layout, or whose totals disagree with its lines."""


def yuan_text(fen: int) -> str:
    return format_major(fen, "CNY")


def time_text(at: datetime) -> str:
    return at.astimezone(BEIJING).strftime(TIME_FORMAT)


def period_text(at: datetime) -> str:
    return at.astimezone(BEIJING).strftime("%Y年%m月%d日 %H:%M:%S")


def account_of(pid: str) -> str:
    return pid + ACCOUNT_SUFFIX


def bill_file_stem(pid: str, day: date) -> str:
    """``<PID>0156_<yyyyMMdd>``: the zip is ``<stem>.csv.zip``."""
    return f"{account_of(pid)}_{day:%Y%m%d}"


# --- parser (adapter) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedBill:
    """The bill as text cells (TABs and spaces stripped), checked against both sets of totals."""

    account: str  # <PID>0156
    start: datetime
    end: datetime
    rows: list[dict[str, str]]  # detail lines by column name
    total: dict[str, str]  # the 合计 line of the summary file


def read_bill_zip(content: bytes) -> ParsedBill:
    files = _unzip(content)
    detail = [text for text in files if text.startswith(DETAIL_TITLE)]
    summary = [text for text in files if text.startswith(SUMMARY_TITLE)]
    if len(detail) != 1 or len(summary) != 1:
        raise BillFormatError("the zip must hold one 业务明细 and one 业务明细(汇总) file")
    account, start, end, rows = _read_detail(detail[0])
    total_account, total = _read_summary(summary[0])
    if total_account != account:
        raise BillFormatError(f"summary account {total_account} is not {account}")
    _check_total(rows, total)
    return ParsedBill(account=account, start=start, end=end, rows=rows, total=total)


def parse_bill_zip(content: bytes) -> list[BillLine]:
    """Parse the downloaded zip into exact :class:`BillLine` values (对账单明细)."""
    return [_line(row, n) for n, row in enumerate(read_bill_zip(content).rows, 1)]


def _unzip(content: bytes) -> list[str]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content), metadata_encoding=ENCODING)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise BillFormatError("the bill is not a zip file") from exc
    with archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        if len(entries) > MAX_ZIP_ENTRIES:
            raise BillFormatError(f"the zip holds {len(entries)} files")
        return [_text(archive, info) for info in entries]


def _text(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > MAX_UNZIPPED_BYTES:
        raise BillFormatError(f"{info.filename} is larger than {MAX_UNZIPPED_BYTES} bytes")
    try:
        with archive.open(info) as stream:
            data = stream.read(MAX_UNZIPPED_BYTES + 1)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BillFormatError(f"{info.filename} does not unzip: {exc}") from exc
    if len(data) > MAX_UNZIPPED_BYTES:
        raise BillFormatError(f"{info.filename} is larger than {MAX_UNZIPPED_BYTES} bytes")
    try:
        return data.decode("gb18030")  # a superset of GBK
    except UnicodeDecodeError as exc:
        raise BillFormatError(f"{info.filename} is not GBK text") from exc


def _lines(text: str, start_marker: str, end_marker: str) -> tuple[list[str], list[str], list[str]]:
    """(head comment lines, CSV lines between the markers, trailing lines)."""
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(start_marker))
        end = next(i for i, line in enumerate(lines) if line.startswith(end_marker))
    except StopIteration:
        raise BillFormatError(f"no {start_marker.strip('#-')} markers") from None
    if not start < end:
        raise BillFormatError("the end marker comes before the start marker")
    return lines[:start], lines[start + 1 : end], lines[end + 1 :]


def _head_fields(head: list[str]) -> tuple[str, datetime, datetime]:
    account = next((m.group(1) for m in map(_ACCOUNT.match, head) if m), None)
    period = next((line for line in head if line.startswith("#起始日期")), None)
    found = re.findall(r"\[(\d{4}年\d{2}月\d{2}日 \d{2}:\d{2}:\d{2})\]", period or "")
    if account is None or len(found) != 2:
        raise BillFormatError("the head lacks #账号 or #起始日期/终止日期")
    start, end = (
        datetime.strptime(t, "%Y年%m月%d日 %H:%M:%S").replace(tzinfo=BEIJING) for t in found
    )
    return account, start, end


def _records(lines: list[str]) -> list[list[str]]:
    return [[cell.strip() for cell in record] for record in csv.reader(lines)]


def _table(lines: list[str], required: Sequence[str]) -> list[dict[str, str]]:
    if not lines:
        raise BillFormatError("no header line")
    header, *records = _records(lines)
    missing = [name for name in required if name not in header]
    if missing:
        raise BillFormatError(f"header lacks {', '.join(missing)}")
    table = []
    for number, record in enumerate(records, 1):
        if len(record) != len(header):
            raise BillFormatError(f"line {number}: {len(record)} values for {len(header)} columns")
        table.append(dict(zip(header, record, strict=True)))
    return table


def _read_detail(text: str) -> tuple[str, datetime, datetime, list[dict[str, str]]]:
    head, body, tail = _lines(text, DETAIL_START, DETAIL_END)
    account, start, end = _head_fields(head)
    rows = _table(body, DETAIL_COLUMNS)
    for number, row in enumerate(rows, 1):
        if row["业务类型"] not in (PAYMENT, REFUND):
            raise BillFormatError(f"line {number}: unknown 业务类型 {row['业务类型']!r}")
    _check_footer(rows, tail)
    return account, start, end, rows


def _check_footer(rows: list[dict[str, str]], tail: list[str]) -> None:
    for pattern, kind in ((_PAYMENT_TOTAL, PAYMENT), (_REFUND_TOTAL, REFUND)):
        match = next((m for m in map(pattern.match, tail) if m), None)
        if match is None:
            raise BillFormatError(f"no #{kind}合计 line")
        of_kind = [r for r in rows if r["业务类型"] == kind]
        received = sum(_fen(r["商家实收（元）"]) for r in of_kind)
        if (int(match.group(1)), _fen(match.group(2))) != (len(of_kind), received):
            raise BillFormatError(f"#{kind}合计 disagrees with the {kind} lines")


def _read_summary(text: str) -> tuple[str, dict[str, str]]:
    head, body, _ = _lines(text, SUMMARY_START, SUMMARY_END)
    account, _, _ = _head_fields(head)
    table = _table(body, SUMMARY_COLUMNS)
    totals = [r for r in table if r["门店编号"] == TOTAL_ROW]
    if len(totals) != 1:
        raise BillFormatError("the summary has no single 合计 line")
    stores = [r for r in table if r["门店编号"] != TOTAL_ROW]
    for name in SUMMARY_COLUMNS[2:]:
        number = _count if name.endswith("笔数") else _fen
        added = sum(number(r[name]) for r in stores)
        if stores and added != number(totals[0][name]):
            raise BillFormatError(f"summary {name}: the stores add up to {added}, not 合计")
    return account, totals[0]


def _count(text: str) -> int:
    if not text.isdigit():
        raise BillFormatError(f"not a count: {text!r}")
    return int(text)


def _check_total(rows: list[dict[str, str]], total: dict[str, str]) -> None:
    kinds = [r["业务类型"] for r in rows]
    expected = {
        "交易订单总笔数": str(kinds.count(PAYMENT)),
        "退款订单总笔数": str(kinds.count(REFUND)),
        "商家实收（元）": yuan_text(sum(_fen(r["商家实收（元）"]) for r in rows)),
        "服务费（元）": yuan_text(sum(_fen(r["服务费（元）"]) for r in rows)),
    }
    for name, value in expected.items():
        given = total.get(name, "")
        same = given == value if name.endswith("笔数") else _fen(given) == _fen(value)
        if not same:
            raise BillFormatError(f"summary {name} is {given}, the lines make {value}")


def _fen(text: str) -> int:
    try:
        return parse_major(text, "CNY")
    except MoneyError as exc:
        raise BillFormatError(str(exc)) from exc


def _line(row: dict[str, str], number: int) -> BillLine:
    kind = row["业务类型"]
    if kind == PAYMENT:
        amount, refund_ref = _fen(row["订单金额（元）"]), None
    elif kind == REFUND:
        amount, refund_ref = -_fen(row["商家实收（元）"]), row["退款批次号/请求号"] or None
    else:
        raise BillFormatError(f"line {number}: unknown 业务类型 {kind!r}")
    for name in ("支付宝交易号", "商户订单号", "完成时间"):
        if not row[name]:
            raise BillFormatError(f"line {number}: {name} is empty")
    try:
        finished = datetime.strptime(row["完成时间"], TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError as exc:
        raise BillFormatError(f"line {number}: 完成时间 {row['完成时间']!r}") from exc
    return BillLine(
        trade_time=finished,
        channel_trade_no=row["支付宝交易号"],
        payment_ref=row["商户订单号"],
        kind="PAYMENT" if kind == PAYMENT else "REFUND",
        amount=Money(amount, "CNY"),
        fee=Money(-_fen(row["服务费（元）"]), "CNY"),
        refund_ref=refund_ref,
        extra=dict(row),
    )
