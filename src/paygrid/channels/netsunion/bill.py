"""NetsUnion clearing files (清算文件): one CSV per clearing batch, the day's batches in one zip.

The layout is MODELLED (no public layout exists; formats/bills.md "NetsUnion (MODELLED)"):
UTF-8, a ``#`` title line naming the member, batch and settlement date and saying the file is
synthetic, the column header, one line per cleared payment (TrxCtgy 0101: an agreement debit,
MsgTp epcc.201, or a gateway payment, epcc.211) and refund (0301), and a
``#TRAILER`` line with the counts and sums the lines must add up to. Amounts are ``CNY100.00``
as in the messages; ``Fee`` is the platform's fee charged on a debit, or given back on a refund.
The file of a batch exists even when the batch cleared nothing. The download is a zip of the
batch files, ``<InstgId>_<yyyyMMdd>_<BatchId>.csv``, made by the adapter from the files the
platform announced (each checked against its signed SM3 digest).

Parsed lines are :class:`BillLine` with exact fen: PAYMENT ``amount`` the debit, REFUND
``amount`` the refund (positive), ``fee`` charged (positive) or returned (negative).
Pure computation: no I/O.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from paygrid.channels.netsunion import wire
from paygrid.channels.ports import BillLine
from paygrid.kernel.money import Money

TITLE = "#EPCC-CLEARING-FILE"
TRAILER = "#TRAILER"
SYNTHETIC = "SYNTHETIC-MODELLED-LAYOUT"
COLUMNS: tuple[str, ...] = (
    "TrxId",
    "OriTrxId",
    "SysTrxId",
    "MsgTp",
    "TrxCtgy",
    "InstgId",
    "SgnAcctIssrId",
    "TrxAmt",
    "Fee",
    "TrxDtTm",
    "BizStsCd",
    "BatchId",
    "SttlmDt",
)
CATEGORIES = {wire.DEBIT_CATEGORY: "PAYMENT", wire.REFUND_CATEGORY: "REFUND"}
MAX_ZIP_ENTRIES = 48
MAX_FILE_BYTES = 256 * 1024 * 1024


class BillFormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClearingRow:
    trx_id: str
    ori_trx_id: str  # the debit's TrxId on a refund line; empty on a debit
    sys_trx_id: str
    category: str  # 0101 debit | 0301 refund
    bank_id: str
    amount: int  # fen
    fee: int  # fen, charged (debit) or returned (refund), never negative
    finished_at: datetime
    msg_tp: str = ""  # the payment's message type (agreement debit or gateway payment)


@dataclass(frozen=True, slots=True)
class Trailer:
    lines: int
    debits: int
    debit_sum: int
    refunds: int
    refund_sum: int
    fees_charged: int
    fees_returned: int


def file_name(member_id: str, day: date, batch_id: str) -> str:
    return f"{member_id}_{day:%Y%m%d}_{batch_id}.csv"


def title_line(member_id: str, batch_id: str, day: date) -> str:
    return f"{TITLE},{member_id},{batch_id},{day.isoformat()},{SYNTHETIC}"


def write_file(member_id: str, batch_id: str, day: date, rows: Sequence[ClearingRow]) -> bytes:
    out = io.StringIO()
    out.write(title_line(member_id, batch_id, day) + "\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        msg_tp = r.msg_tp or (wire.DEBIT if r.category == wire.DEBIT_CATEGORY else wire.REFUND)
        writer.writerow(
            [r.trx_id, r.ori_trx_id, r.sys_trx_id, msg_tp, r.category, member_id, r.bank_id,
             wire.amount_text(r.amount), wire.amount_text(r.fee), wire.beijing_text(r.finished_at),
             wire.BIZ_SUCCESS, batch_id, day.isoformat()]
        )  # fmt: skip
    out.write(trailer_line(rows) + "\n")
    return out.getvalue().encode("utf-8")


def totals(rows: Sequence[ClearingRow]) -> Trailer:
    debits = [r for r in rows if r.category == wire.DEBIT_CATEGORY]
    refunds = [r for r in rows if r.category == wire.REFUND_CATEGORY]
    return Trailer(
        len(rows),
        len(debits),
        sum(r.amount for r in debits),
        len(refunds),
        sum(r.amount for r in refunds),
        sum(r.fee for r in debits),
        sum(r.fee for r in refunds),
    )


def trailer_line(rows: Sequence[ClearingRow]) -> str:
    t = totals(rows)
    amounts = (t.debit_sum, t.refund_sum, t.fees_charged, t.fees_returned)
    a, b, c, d = (wire.amount_text(x) for x in amounts)
    return f"{TRAILER},{t.lines},{t.debits},{a},{t.refunds},{b},{c},{d}"


def parse_trailer(line: str) -> Trailer:
    parts = line.strip().split(",")
    if len(parts) != 8 or parts[0] != TRAILER:
        raise BillFormatError("no #TRAILER line at the end")
    counts = [p for i, p in enumerate(parts[1:]) if i in (0, 1, 3)]
    if not all(c.isascii() and c.isdigit() for c in counts):
        raise BillFormatError("the trailer's counts are not numbers")
    sums = [wire.parse_amount(p) for i, p in enumerate(parts[1:]) if i in (2, 4, 5, 6)]
    if any(s is None for s in sums):
        raise BillFormatError("the trailer's sums are not amounts")
    s = [x or 0 for x in sums]
    return Trailer(int(counts[0]), int(counts[1]), s[0], int(counts[2]), s[1], s[2], s[3])


# --- reading -------------------------------------------------------------------------------------


def parse_bill_zip(content: bytes) -> list[BillLine]:
    """Every line of every batch file in the zip, each file checked against its trailer."""
    lines: list[BillLine] = []
    for name, data in unzip(content):
        lines.extend(parse_file(name, data))
    return lines


def unzip(content: bytes) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as exc:
        raise BillFormatError("not a zip of clearing files") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_ENTRIES:
            raise BillFormatError(f"the zip holds {len(infos)} files")
        files = []
        for info in infos:
            if info.file_size > MAX_FILE_BYTES:
                raise BillFormatError(f"{info.filename} is too large")
            with archive.open(info) as handle:
                files.append((info.filename, handle.read(MAX_FILE_BYTES + 1)))
    return sorted(files)


def parse_file(name: str, data: bytes) -> list[BillLine]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BillFormatError(f"{name}: not UTF-8") from exc
    rows = text.splitlines()
    if len(rows) < 3 or not rows[0].startswith(TITLE + ",") or SYNTHETIC not in rows[0]:
        raise BillFormatError(f"{name}: not a clearing file")
    head = rows[0].split(",")
    member_id, batch_id = head[1], head[2]
    if tuple(next(csv.reader([rows[1]]))) != COLUMNS:
        raise BillFormatError(f"{name}: unexpected columns")
    trailer = parse_trailer(rows[-1])
    parsed = [_line(name, n + 3, fields, member_id, batch_id)
              for n, fields in enumerate(csv.reader(rows[2:-1]))]  # fmt: skip
    made = totals([row for row, _ in parsed])
    if made != trailer:
        raise BillFormatError(f"{name}: the lines make {made}, the trailer says {trailer}")
    return [line for _, line in parsed]


def _line(
    name: str, number: int, fields: list[str], member_id: str, batch_id: str
) -> tuple[ClearingRow, BillLine]:
    if len(fields) != len(COLUMNS):
        raise BillFormatError(f"{name}: line {number}: {len(fields)} fields")
    value = dict(zip(COLUMNS, fields, strict=True))
    amount, fee = wire.parse_amount(value["TrxAmt"]), wire.parse_amount(value["Fee"])
    at = wire.parse_time(value["TrxDtTm"])
    kind = CATEGORIES.get(value["TrxCtgy"])
    problems = {
        "TrxAmt": amount is None,
        "Fee": fee is None,
        "TrxDtTm": at is None,
        "TrxCtgy": kind is None,
        "TrxId": not wire.is_id(value["TrxId"]),
        "OriTrxId": kind == "REFUND" and not wire.is_id(value["OriTrxId"]),
        "InstgId": value["InstgId"] != member_id,
        "BatchId": value["BatchId"] != batch_id,
        "BizStsCd": value["BizStsCd"] != wire.BIZ_SUCCESS,
    }
    bad = [field for field, wrong in problems.items() if wrong]
    if bad:
        raise BillFormatError(f"{name}: line {number}: {bad[0]} is not valid")
    assert amount is not None and fee is not None and at is not None
    refund = kind == "REFUND"
    row = ClearingRow(
        value["TrxId"], value["OriTrxId"], value["SysTrxId"], value["TrxCtgy"],
        value["SgnAcctIssrId"], amount, fee, at,
    )  # fmt: skip
    line = BillLine(
        trade_time=at,
        channel_trade_no=value["SysTrxId"],
        payment_ref=value["OriTrxId"] if refund else value["TrxId"],
        kind="REFUND" if refund else "PAYMENT",
        amount=Money(amount, "CNY"),
        fee=Money(-fee if refund else fee, "CNY"),
        refund_ref=value["TrxId"] if refund else None,
        extra={"BatchId": batch_id, "SgnAcctIssrId": value["SgnAcctIssrId"]},
    )
    return row, line
