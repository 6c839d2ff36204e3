"""WeChat Pay trade bill (交易账单) in the real layout: writer (sandbox) and parser (adapter).

Layout: detail header, detail rows, summary header (总交易单数,…), summary row. Comma separated,
UTF-8 (a leading BOM is tolerated), every value in detail and summary rows prefixed with a backtick
so spreadsheets keep long numbers intact. Amounts are yuan; they are parsed exactly into fen with
:func:`paygrid.kernel.money.parse_major`, never through a float.

Domain-level: standard library, the money kernel and the channel port types only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from paygrid.channels.ports import BillLine
from paygrid.kernel.money import Money, MoneyError, format_major, parse_major

BEIJING = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

ALL_COLUMNS: tuple[str, ...] = (
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
)
# bill_type=REFUND: the first 14 columns of ALL, the refund's times, then the rest of ALL
REFUND_COLUMNS: tuple[str, ...] = (
    *ALL_COLUMNS[:14],
    "退款申请时间",
    "退款成功时间",
    *ALL_COLUMNS[14:],
)
# bill_type=SUCCESS: the first 14 columns of ALL, then goods, attach, fee, rate, total, remark
SUCCESS_COLUMNS: tuple[str, ...] = (
    *ALL_COLUMNS[:14],
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "费率备注",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
)
FEE_DIGITS = 5  # fees are printed with five decimals (e.g. `0.02000)


class BillFormatError(ValueError):
    """A trade bill that does not follow the layout, or whose summary disagrees with its rows."""


@dataclass(frozen=True, slots=True)
class TradeBillRow:
    """One detail row (交易明细). Amounts in fen; ``trade_state`` SUCCESS or REFUND.

    A refund row (退款) carries 0 as 订单金额/应结订单金额 (``total=0``), its amount in 退款金额
    and 申请退款金额, the fee it returns as a negative 手续费, and its times in ``refund_at`` /
    ``refund_success_at`` (the REFUND layout's 退款申请时间/退款成功时间)."""

    trade_time: datetime
    appid: str
    mchid: str
    transaction_id: str
    out_trade_no: str
    openid: str
    trade_type: str
    trade_state: str
    total: int  # 订单金额
    fee: int  # 手续费, negative on refund rows
    rate: str  # 费率, e.g. "0.20%"
    description: str = ""
    attach: str = ""
    bank_type: str = "OTHERS"
    currency: str = "CNY"
    settlement_total: int | None = None  # 应结订单金额; defaults to total (no coupons)
    coupon: int = 0
    refund_id: str = ""
    out_refund_no: str = ""
    refund: int = 0  # 退款金额
    recharge_coupon_refund: int = 0
    refund_type: str = ""
    refund_status: str = ""
    refund_requested: int = 0  # 申请退款金额
    sub_mchid: str = "0"
    device_info: str = ""
    fee_remark: str = ""
    refund_at: datetime | None = None
    refund_success_at: datetime | None = None

    def cells(self) -> dict[str, str]:
        yuan = _yuan
        settlement = self.total if self.settlement_total is None else self.settlement_total
        refund = self.trade_state == "REFUND"
        return {
            "交易时间": self.trade_time.astimezone(BEIJING).strftime(TIME_FORMAT),
            "公众账号ID": self.appid,
            "商户号": self.mchid,
            "特约商户号": self.sub_mchid,
            "设备号": self.device_info,
            "微信订单号": self.transaction_id,
            "商户订单号": self.out_trade_no,
            "用户标识": self.openid,
            "交易类型": self.trade_type,
            "交易状态": self.trade_state,
            "付款银行": self.bank_type,
            "货币种类": self.currency,
            "应结订单金额": yuan(settlement),
            "代金券金额": yuan(self.coupon),
            "微信退款单号": self.refund_id if refund else "0",
            "商户退款单号": self.out_refund_no if refund else "0",
            "退款金额": yuan(self.refund),
            "充值券退款金额": yuan(self.recharge_coupon_refund),
            "退款类型": self.refund_type,
            "退款状态": self.refund_status,
            "商品名称": self.description,
            "商户数据包": self.attach,
            "手续费": _fee(self.fee),
            "费率": self.rate,
            "订单金额": yuan(self.total),
            "申请退款金额": yuan(self.refund_requested),
            "费率备注": self.fee_remark,
            "退款申请时间": _time_text(self.refund_at),
            "退款成功时间": _time_text(self.refund_success_at),
        }


def _time_text(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(BEIJING).strftime(TIME_FORMAT)


def _yuan(fen: int) -> str:
    return format_major(fen, "CNY")


def _fee(fen: int) -> str:
    return _yuan(fen) + "0" * (FEE_DIGITS - 2)


def rate_text(rate_ppm: int) -> str:
    """A fee rate in parts per million as the bill prints it: 2000 -> '0.20%'."""
    return f"{(Decimal(rate_ppm) / 10_000).quantize(Decimal('0.01'))}%"


# --- writer (sandbox) -------------------------------------------------------------------------


def write_trade_bill(rows: Sequence[TradeBillRow], bill_type: str = "ALL") -> bytes:
    """The bill file bytes; ``bill_type`` ALL uses 27 columns, SUCCESS 20, REFUND 29."""
    columns = {"SUCCESS": SUCCESS_COLUMNS, "REFUND": REFUND_COLUMNS}.get(bill_type, ALL_COLUMNS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        cells = row.cells()
        writer.writerow("`" + cells[name] for name in columns)
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerow("`" + value for value in _summary(rows))
    return out.getvalue().encode("utf-8")


def _summary(rows: Sequence[TradeBillRow]) -> list[str]:
    paid = [r for r in rows if r.trade_state != "REFUND"]
    refunds = [r for r in rows if r.trade_state == "REFUND"]
    settlement = sum(r.total if r.settlement_total is None else r.settlement_total for r in paid)
    return [
        str(len(rows)),
        _yuan(settlement),
        _yuan(sum(r.refund for r in refunds)),
        _yuan(sum(r.recharge_coupon_refund for r in refunds)),
        _fee(sum(r.fee for r in rows)),
        _yuan(sum(r.total for r in paid)),
        _yuan(sum(r.refund_requested for r in refunds)),
    ]


# --- parser (adapter) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedBill:
    """The bill as text cells, backticks stripped: detail rows and the summary, by column name."""

    columns: tuple[str, ...]
    rows: list[dict[str, str]]
    summary: dict[str, str]


def read_trade_bill(content: bytes) -> ParsedBill:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BillFormatError("the trade bill is not UTF-8") from exc
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    if len(records) < 3:
        raise BillFormatError("the trade bill lacks a header or a summary")
    columns = tuple(c.strip() for c in records[0])
    marker = _summary_index(records)
    rows = [_cells(columns, record, n) for n, record in enumerate(records[1:marker], 2)]
    if marker != len(records) - 2:
        raise BillFormatError("the summary must be the last two lines")
    summary_columns = tuple(c.strip() for c in records[marker])
    summary = _cells(summary_columns, records[marker + 1], marker + 2)
    _check_summary(rows, summary)
    return ParsedBill(columns=columns, rows=rows, summary=summary)


def _summary_index(records: list[list[str]]) -> int:
    for index, record in enumerate(records):
        if index and record and record[0].strip() == SUMMARY_COLUMNS[0]:
            return index
    raise BillFormatError("no summary header (总交易单数) in the trade bill")


def _cells(columns: tuple[str, ...], record: list[str], line: int) -> dict[str, str]:
    if len(record) != len(columns):
        raise BillFormatError(f"line {line}: {len(record)} values for {len(columns)} columns")
    return {name: _unmark(value) for name, value in zip(columns, record, strict=True)}


def _unmark(value: str) -> str:
    stripped = value.strip()
    return stripped[1:] if stripped.startswith("`") else stripped


def _check_summary(rows: list[dict[str, str]], summary: dict[str, str]) -> None:
    count = summary.get(SUMMARY_COLUMNS[0], "")
    if not count.isdigit() or int(count) != len(rows):
        raise BillFormatError(f"summary counts {count!r} rows, the bill has {len(rows)}")


def parse_trade_bill(content: bytes) -> list[BillLine]:
    """Parse a trade bill (ALL, SUCCESS or REFUND layout) into exact :class:`BillLine` values
    (对账单明细).

    PAYMENT lines carry 订单金额 (the order total), REFUND lines 申请退款金额 (falling back to
    退款金额 where the layout lacks it), ``refund_ref`` = 商户退款单号 and, as ``trade_time``, the
    refund's 退款申请时间 where the layout has it, else 交易时间; every cell is kept in ``extra``
    by column name.
    """
    return [_line(row, n) for n, row in enumerate(read_trade_bill(content).rows, 2)]


def _line(row: dict[str, str], line: int) -> BillLine:
    try:
        currency = row.get("货币种类") or "CNY"
        state = _required(row, "交易状态")
        if state == "SUCCESS":
            kind, amount, refund_ref = "PAYMENT", _amount(row, ("订单金额", "应结订单金额")), None
        elif state in ("REFUND", "REVOKED"):
            refund_ref = row.get("商户退款单号") or None
            kind, amount = "REFUND", _amount(row, ("申请退款金额", "退款金额"))
        else:
            raise BillFormatError(f"unknown 交易状态 {state!r}")
        at = row.get("退款申请时间") if kind == "REFUND" else None
        return BillLine(
            trade_time=_time(at or _required(row, "交易时间")),
            channel_trade_no=_required(row, "微信订单号"),
            payment_ref=_required(row, "商户订单号"),
            kind=kind,
            amount=Money(parse_major(amount, currency), currency),
            fee=Money(parse_major(_required(row, "手续费"), currency), currency),
            refund_ref=refund_ref,
            extra=dict(row),
        )
    except (MoneyError, ValueError) as exc:
        raise BillFormatError(f"line {line}: {exc}") from exc


def _required(row: dict[str, str], name: str) -> str:
    value = row.get(name, "")
    if not value:
        raise BillFormatError(f"column {name} is missing or empty")
    return value


def _amount(row: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = row.get(name, "")
        if value and parse_major(value, row.get("货币种类") or "CNY") != 0:
            return value
    return _required(row, names[0])


def _time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=BEIJING)
