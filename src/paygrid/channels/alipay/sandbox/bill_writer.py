"""The sandbox's side of the trade bill (业务明细账单): lines in, the zip Alipay serves out.

Layout and its constants live in :mod:`paygrid.channels.alipay.bill` next to the parser, so the
writer and the parser cannot drift apart.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from paygrid.channels.alipay.bill import (
    BEIJING,
    DETAIL_COLUMNS,
    DETAIL_END,
    DETAIL_START,
    DETAIL_TITLE,
    ENCODING,
    PAYMENT,
    REFUND,
    SUMMARY_COLUMNS,
    SUMMARY_END,
    SUMMARY_START,
    SUMMARY_TITLE,
    TABBED_COLUMNS,
    TOTAL_ROW,
    account_of,
    bill_file_stem,
    period_text,
    time_text,
    yuan_text,
)


@dataclass(frozen=True, slots=True)
class BillRow:
    """One detail line (业务明细). Amounts in fen, signed as printed."""

    trade_no: str  # 支付宝交易号
    out_trade_no: str  # 商户订单号
    kind: str  # 交易 | 退款
    subject: str
    created_at: datetime  # 创建时间 (of the trade)
    finished_at: datetime  # 完成时间 (payment, or refund)
    buyer_account: str  # 对方账户, masked
    total: int  # 订单金额, of the trade, positive on refund lines too
    received: int  # 商家实收: the payment, or minus the refund
    service_fee: int  # 服务费: negative (charged) on payments, positive (returned) on refunds
    out_request_no: str = ""  # 退款批次号/请求号, refunds only
    store_id: str = ""
    remark: str = ""

    def cells(self) -> dict[str, str]:
        zero = yuan_text(0)
        values = dict.fromkeys(DETAIL_COLUMNS, "")
        values.update(
            {
                "支付宝交易号": self.trade_no,
                "商户订单号": self.out_trade_no,
                "业务类型": self.kind,
                "商品名称": self.subject,
                "创建时间": time_text(self.created_at),
                "完成时间": time_text(self.finished_at),
                "门店编号": self.store_id,
                "对方账户": self.buyer_account,
                "订单金额（元）": yuan_text(self.total),
                "商家实收（元）": yuan_text(self.received),
                "退款批次号/请求号": self.out_request_no,
                "服务费（元）": yuan_text(self.service_fee),
                "备注": self.remark,
            }
        )
        for name in DETAIL_COLUMNS[13:18] + DETAIL_COLUMNS[19:21] + ("分润（元）",):
            values[name] = zero
        return {k: v + "\t" if k in TABBED_COLUMNS else v for k, v in values.items()}


# --- writer (sandbox) -------------------------------------------------------------------------


class _GbkZipInfo(zipfile.ZipInfo):
    """Entry names in GBK without the UTF-8 flag, as Alipay's zips carry them."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode(ENCODING), self.flag_bits


def write_bill_zip(pid: str, day: date, rows: Sequence[BillRow], exported_at: datetime) -> bytes:
    """The zip Alipay serves for ``day``'s trade bill (Asia/Shanghai day)."""
    start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    period = (start, start + timedelta(days=1))
    stem = bill_file_stem(pid, day)
    files = {
        f"{stem}_业务明细.csv": write_detail(pid, period, rows, exported_at),
        f"{stem}_业务明细(汇总).csv": write_summary(pid, period, rows, exported_at),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = _GbkZipInfo(name, date_time=exported_at.astimezone(BEIJING).timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return out.getvalue()


def _head(title: str, pid: str, period: tuple[datetime, datetime], marker: str) -> list[str]:
    start, end = (period_text(at) for at in period)
    return [
        title,
        f"#账号：[{account_of(pid)}]",
        f"#起始日期：[{start}]   终止日期：[{end}]",
        marker,
    ]


def _csv_line(values: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


def _encode(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(ENCODING, errors="replace")


def write_detail(
    pid: str, period: tuple[datetime, datetime], rows: Sequence[BillRow], exported_at: datetime
) -> bytes:
    payments = [r for r in rows if r.kind == PAYMENT]
    refunds = [r for r in rows if r.kind == REFUND]
    paid = yuan_text(sum(r.received for r in payments))
    refunded = yuan_text(sum(r.received for r in refunds))
    lines = _head(DETAIL_TITLE, pid, period, DETAIL_START)
    lines.append(_csv_line(DETAIL_COLUMNS))
    lines += [_csv_line(list(row.cells().values())) for row in rows]
    lines += [
        DETAIL_END,
        f"#交易合计：{len(payments)}笔，商家实收共{paid}元，商家优惠共0.00元",
        f"#退款合计：{len(refunds)}笔，商家实收退款共{refunded}元，商家优惠退款共0.00元",
        f"#导出时间：[{period_text(exported_at)}]",
    ]
    return _encode(lines)


def write_summary(
    pid: str, period: tuple[datetime, datetime], rows: Sequence[BillRow], exported_at: datetime
) -> bytes:
    lines = _head(SUMMARY_TITLE, pid, period, SUMMARY_START)
    lines.append(_csv_line(SUMMARY_COLUMNS))
    stores = sorted({r.store_id for r in rows})
    for store in stores:
        lines.append(_csv_line(_summary_values(store, [r for r in rows if r.store_id == store])))
    total = _summary_values(TOTAL_ROW, rows)
    lines += [_csv_line(total), SUMMARY_END, f"#导出时间：[{period_text(exported_at)}]"]
    return _encode(lines)


def _summary_values(store: str, rows: Sequence[BillRow]) -> list[str]:
    received = sum(r.received for r in rows)
    fee = sum(r.service_fee for r in rows)
    zero = yuan_text(0)
    return [
        store,
        "",
        str(sum(1 for r in rows if r.kind == PAYMENT)),
        str(sum(1 for r in rows if r.kind == REFUND)),
        yuan_text(sum(r.total for r in rows if r.kind == PAYMENT)),
        yuan_text(received),
        zero,
        zero,
        zero,
        yuan_text(fee),
        zero,
        yuan_text(received + fee),
    ]
