"""UnionPay's merchant reconciliation files (对账文件): ZM and ZME, fixed width, GBK, zipped.

The file transfer (txnType 76) answers ``fileContent`` = base64 of the zlib-deflated zip
(the SDKs' ``deCodeFileContent`` inflates it), ``fileName`` = ``<merId>_<yyyyMMdd>.zip``. The
zip holds ``INN<yyMMdd>88ZM_<merId>`` (one record per consume, refund, revoke cleared that
day) and ``INN<yyMMdd>88ZME_<merId>`` (errors and adjustments, 差错/调账).

Every record is its fields, each exactly its width in **GBK bytes** (a reader counting
characters breaks on a Chinese field), one space between fields, CRLF at the end; text
left-aligned space-padded, numbers right-aligned zero-padded (formats/bills.md; padding and
separator partly unverified). Modelled where the sources are silent (docs/unionpay.md): the
交易代码 values (:data:`TXN_CODES`) and the signed amounts — 商户手续费, 结算金额 and 清算净额
are a sign (``+``/``-``) and 12 digits: a consume's fee ``+`` (charged), a refund's or revoke's
``-`` (given back); 结算金额 ``+`` for a consume, ``-`` for money going back.

The writer (sandbox) and the readers (adapter here, recon in ``bill_import.py``) share these
constants. Domain-level: standard library, the money kernel and the port types only.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from paygrid.channels.ports import BillLine
from paygrid.channels.unionpay.parsing import ref_of
from paygrid.kernel.money import Money

BEIJING = ZoneInfo("Asia/Shanghai")
ENCODING = "gbk"
SEPARATOR = b" "
NEWLINE = b"\r\n"
MAX_FILE_BYTES = 256 * 1024 * 1024  # bound on the inflated zip and on each member
MAX_ZIP_ENTRIES = 8

ZM_FIELDS: tuple[tuple[str, int], ...] = (
    ("交易代码", 3),
    ("代理机构标识码", 11),
    ("发送机构标识码", 11),
    ("系统跟踪号", 6),
    ("交易传输时间", 10),
    ("帐号", 19),
    ("交易金额", 12),
    ("商户类别", 4),
    ("终端类型", 2),
    ("查询流水号", 21),
    ("支付方式(旧)", 2),
    ("商户订单号", 32),
    ("支付卡类型", 2),
    ("原始交易系统跟踪号", 6),
    ("原始交易日期时间", 10),
    ("商户手续费", 13),
    ("结算金额", 13),
    ("支付方式", 4),
    ("集团商户代码", 15),
    ("交易类型", 2),
    ("交易子类", 2),
    ("业务类型", 6),
    ("帐号类型", 2),
    ("账单类型", 4),
    ("账单号码", 32),
    ("交互方式", 1),
    ("原交易查询流水号", 21),
    ("商户代码", 15),
    ("分账入账方式", 1),
    ("二级商户代码", 15),
    ("二级商户简称", 32),
    ("二级商户分账入账金额", 13),
    ("清算净额", 13),
    ("终端号", 8),
    ("商户自定义域", 32),
    ("优惠金额", 13),
    ("发票金额", 13),
    ("分期付款附加手续费", 12),
    ("分期付款期数", 2),
    ("交易介质", 1),
    ("保留字段", 32),  # unnamed in the sources
    ("保留使用", 98),
)
# ZME: widths known, names not (formats/unionpay.md); the first seven mirror ZM's.
ZME_FIELDS: tuple[tuple[str, int], ...] = tuple(
    (name, width)
    for name, width in zip(
        [n for n, _ in ZM_FIELDS[:7]] + [f"字段{i}" for i in range(8, 23)],
        (3, 11, 11, 6, 10, 19, 12, 4, 2, 2, 6, 10, 4, 12, 13, 13, 15, 15, 1, 12, 2, 135),
        strict=True,
    )
)
NUMERIC = frozenset(
    {"系统跟踪号", "交易传输时间", "交易金额", "原始交易系统跟踪号", "原始交易日期时间",
     "二级商户分账入账金额", "优惠金额", "发票金额", "分期付款附加手续费"}
)  # fmt: skip
SIGNED = frozenset({"商户手续费", "结算金额", "清算净额"})
CONSUME, REFUND, REVOKE = "01", "04", "31"
TXN_CODES = {CONSUME: "S22", REVOKE: "S31", REFUND: "S30"}  # 交易代码: MODELLED values
KINDS = {CONSUME: "PAYMENT", REFUND: "REFUND", REVOKE: "REFUND"}
_SIGNED = re.compile(rb"[+-][0-9]{12}")


class BillFormatError(ValueError):
    """A file that does not follow the layout."""


def record_length(fields: Sequence[tuple[str, int]]) -> int:
    return sum(width for _, width in fields) + len(fields) - 1


ZM_LENGTH = record_length(ZM_FIELDS)
ZME_LENGTH = record_length(ZME_FIELDS)


# --- cells -----------------------------------------------------------------------------------


def signed_cell(fen: int) -> str:
    return f"{'-' if fen < 0 else '+'}{abs(fen):012d}"


def _cell(name: str, width: int, value: str) -> bytes:
    if name in NUMERIC and value:
        if not value.isdigit() or len(value) > width:
            raise ValueError(f"{name}: {value!r} is not {width} digits")
        return value.rjust(width, "0").encode("ascii")
    if name in SIGNED and value and not _SIGNED.fullmatch(value.encode("ascii", "replace")):
        raise ValueError(f"{name}: {value!r} is not a sign and 12 digits")
    data = b""
    for char in value:  # cut on a character, never inside a GBK pair
        encoded = char.encode(ENCODING, errors="replace")
        if len(data) + len(encoded) > width:
            break
        data += encoded
    return data.ljust(width, b" ")


def write_record(values: Mapping[str, str], fields: Sequence[tuple[str, int]] = ZM_FIELDS) -> bytes:
    """One record: each field exactly its width in GBK bytes (longer text is cut)."""
    unknown = set(values) - {name for name, _ in fields}
    if unknown:
        raise ValueError(f"no such fields: {sorted(unknown)}")
    cells = [_cell(name, width, values.get(name, "")) for name, width in fields]
    return SEPARATOR.join(cells) + NEWLINE


def read_record(line: bytes, fields: Sequence[tuple[str, int]] = ZM_FIELDS) -> dict[str, str]:
    """A record (without its line end) sliced by byte widths and decoded; BillFormatError
    when its length is not the layout's or a field is not GBK."""
    if len(line) != record_length(fields):
        raise BillFormatError(f"{len(line)} bytes, the layout has {record_length(fields)}")
    values: dict[str, str] = {}
    at = 0
    for index, (name, width) in enumerate(fields):
        if index and line[at : at + 1] != SEPARATOR:
            raise BillFormatError(f"no separator before {name}")
        at += 1 if index else 0
        try:
            values[name] = line[at : at + width].decode("gb18030").strip()
        except UnicodeDecodeError:
            raise BillFormatError(f"{name} is not GBK text") from None
        at += width
    return values


def records(content: bytes) -> Iterable[tuple[int, bytes]]:
    """(line number, record bytes) of a file's non-blank lines, CRLF or LF."""
    for number, raw in enumerate(content.split(b"\n"), 1):
        line = raw.removesuffix(b"\r")
        if line.strip():
            yield number, line


# --- the zip and the fileContent ------------------------------------------------------------


def zip_name(mer_id: str, day: date) -> str:
    return f"{mer_id}_{day:%Y%m%d}.zip"


def member_names(mer_id: str, day: date) -> tuple[str, str]:
    stem = f"INN{day:%y%m%d}88"
    return f"{stem}ZM_{mer_id}", f"{stem}ZME_{mer_id}"


def write_zip(mer_id: str, day: date, zm: bytes, zme: bytes, made_at: datetime) -> bytes:
    out = io.BytesIO()
    stamp = made_at.astimezone(BEIJING).timetuple()[:6]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in zip(member_names(mer_id, day), (zm, zme), strict=True):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return out.getvalue()


def encode_file_content(zip_bytes: bytes) -> str:
    """``fileContent``: base64 of the zlib-deflated zip."""
    return base64.b64encode(zlib.compress(zip_bytes)).decode("ascii")


def decode_file_content(text: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The zip inside ``fileContent``; ValueError when it is not base64 of a deflated stream
    or inflates past ``limit`` bytes."""
    try:
        packed = base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError("fileContent is not base64") from exc
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, limit + 1)
    except zlib.error as exc:
        raise ValueError("fileContent does not inflate") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise ValueError(f"fileContent inflates past {limit} bytes")
    if not inflater.eof:
        raise ValueError("fileContent is cut short")
    return data


def unzip(content: bytes) -> tuple[bytes, bytes]:
    """(ZM, ZME) from the zip; BillFormatError when either is missing or too large."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise BillFormatError("not a zip file") from exc
    found: dict[str, bytes] = {}
    with archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        if len(entries) > MAX_ZIP_ENTRIES:
            raise BillFormatError(f"the zip holds {len(entries)} files")
        for info in entries:
            kind = member_kind(info.filename)
            if kind is None:
                continue
            if kind in found:
                raise BillFormatError(f"two {kind} files in the zip")
            found[kind] = _member(archive, info)
    if set(found) != {"ZM", "ZME"}:
        raise BillFormatError("the zip must hold a ZM_ and a ZME_ file")
    return found["ZM"], found["ZME"]


def member_kind(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1]
    if re.fullmatch(r"(INN\d{6}\d{2})?ZME_\d{15}", base):
        return "ZME"
    if re.fullmatch(r"(INN\d{6}\d{2})?ZM_\d{15}", base):
        return "ZM"
    return None


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_FILE_BYTES:
        raise BillFormatError(f"{info.filename} is too large")
    try:
        with archive.open(info) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BillFormatError(f"{info.filename} does not unzip: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise BillFormatError(f"{info.filename} is too large")
    return data


# --- the adapter's parser -------------------------------------------------------------------


def parse_zip(content: bytes, day: date | None = None) -> list[BillLine]:
    """The ZM records of a downloaded zip as exact :class:`BillLine` values. A consume is a
    PAYMENT; a refund (04) or revoke (31) a REFUND named by its own orderId (orderIds as our
    references, parsing.py), its payment found
    through 原交易查询流水号 when the consume is in the same file. ZME records are refused:
    their layout's names are unverified, and recon must not pass over an adjustment."""
    zm, zme = unzip(content)
    for number, _ in records(zme):
        raise BillFormatError(f"ZME line {number}: adjustments (差错) are not read yet")
    rows = [(number, read_record(line)) for number, line in records(zm)]
    orders = {r["查询流水号"]: _ref(r["商户订单号"]) for _, r in rows if r["交易类型"] == CONSUME}
    return [_line(row, number, day, orders) for number, row in rows]


def _line(row: dict[str, str], number: int, day: date | None, orders: dict[str, str]) -> BillLine:
    txn_type = row["交易类型"]
    if txn_type not in KINDS:
        raise BillFormatError(f"line {number}: 交易类型 {txn_type!r}")
    for name in ("查询流水号", "商户订单号", "交易传输时间", "交易金额"):
        if not row[name]:
            raise BillFormatError(f"line {number}: {name} is empty")
    at = trace_time(row["交易传输时间"], day)
    fee = signed_fen(row["商户手续费"])
    refund = KINDS[txn_type] == "REFUND"
    if fee is None:
        raise BillFormatError(f"line {number}: 商户手续费 {row['商户手续费']!r}")
    return BillLine(
        trade_time=at,
        channel_trade_no=row["原交易查询流水号"] if refund else row["查询流水号"],
        payment_ref=orders.get(row["原交易查询流水号"], "") if refund else _ref(row["商户订单号"]),
        kind=KINDS[txn_type],
        amount=Money(int(row["交易金额"]), "CNY"),
        fee=Money(fee, "CNY"),
        refund_ref=_ref(row["商户订单号"]) if refund else None,
        extra=dict(row),
    )


def _ref(order_id: str) -> str:
    """The orderId as our reference (parsing.py), or as it is when we could not have sent it."""
    return ref_of(order_id) or order_id


def signed_fen(text: str) -> int | None:
    if not _SIGNED.fullmatch(text.encode("ascii", "replace")):
        return None
    return int(text)


def trace_time(text: str, day: date | None) -> datetime:
    """``MMDDhhmmss`` (Beijing) in the year of ``day`` (the bill's date), or of today."""
    year = (day or datetime.now(BEIJING).date()).year
    try:
        naive = datetime.strptime(f"{year}{text}", "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise BillFormatError(f"交易传输时间 {text!r}") from exc
    return naive.replace(tzinfo=BEIJING)
