"""The reconciliation file (对账文件) through the file transfer (txnType 76), the day's end and
the settlement into the reserve account.

A day's file (Asia/Shanghai day: the sandbox's clearing day; UnionPay's cut is about 23:00,
unverified) is ready at ``bill_ready_hour`` the next morning, or at once after
``POST /sandbox/close-day``; before that the answer is 98 (文件不存在, MODELLED). It is written
at transfer time from what the sandbox processed that day: a ZM line per consume paid, per
refund and per revoke done, then the file faults. ``settleDate`` is MMDD: the latest such
date not in the future.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from paygrid.channels.bank.settle import settle_day
from paygrid.channels.unionpay import zm
from paygrid.channels.unionpay.capabilities import SETTLEMENT_PREFIX
from paygrid.channels.unionpay.sandbox import protocol as p
from paygrid.kernel.money import rate_fee

if TYPE_CHECKING:
    from paygrid.channels.unionpay.sandbox.service import UnionPaySandbox

PAYER_NAME = "中国银联股份有限公司"
INSTITUTION = "00010000"  # 代理/发送机构标识码: UnionPay itself (MODELLED)
MCC = "5311"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Line:
    """One ZM record, in fen; ``settle`` and ``fee`` signed as printed."""

    txn_type: str
    order_id: str
    query_id: str
    orig_query_id: str
    trace_no: str
    at: datetime  # Beijing
    amount: int
    fee: int  # + charged, - given back
    settle: int  # + to the merchant, - back from it
    channel_type: str = "07"
    acc_no: str = ""
    orig_trace_no: str = ""
    orig_at: str = ""
    note: str = ""  # 商户自定义域

    def record(self, mer_id: str) -> bytes:
        return zm.write_record(
            {
                "交易代码": zm.TXN_CODES[self.txn_type],
                "代理机构标识码": INSTITUTION,
                "发送机构标识码": INSTITUTION,
                "系统跟踪号": self.trace_no,
                "交易传输时间": self.at.strftime("%m%d%H%M%S"),
                "帐号": self.acc_no,
                "交易金额": str(self.amount),
                "商户类别": MCC,
                "终端类型": self.channel_type,
                "查询流水号": self.query_id,
                "商户订单号": self.order_id,
                "支付卡类型": "01",
                "原始交易系统跟踪号": self.orig_trace_no,
                "原始交易日期时间": self.orig_at,
                "商户手续费": zm.signed_cell(self.fee),
                "结算金额": zm.signed_cell(self.settle),
                "支付方式": "0001",
                "交易类型": self.txn_type,
                "交易子类": "01" if self.txn_type == zm.CONSUME else "00",
                "业务类型": p.GATEWAY_BIZ,
                "帐号类型": "01",
                "交互方式": "0",
                "原交易查询流水号": self.orig_query_id,
                "商户代码": mer_id,
                "清算净额": zm.signed_cell(self.settle - self.fee),
                "商户自定义域": self.note,
            }
        )


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=p.BEIJING)


def day_of_mmdd(text: str, now: float) -> date | None:
    """The latest date with month-day ``text`` not after today (Beijing)."""
    if not p.MMDD.match(text):
        return None
    today = datetime.fromtimestamp(now, p.BEIJING).date()
    for year in (today.year, today.year - 1):
        try:
            found = date(year, int(text[:2]), int(text[2:]))
        except ValueError:
            continue
        if found <= today:
            return found
    return None


def ready(sandbox: UnionPaySandbox, day: date, now: float) -> bool:
    if sandbox.store.day_closed_at(day.isoformat()) is not None:
        return True
    ready_at = _start(day) + timedelta(days=1, hours=sandbox.settings.bill_ready_hour)
    return now >= ready_at.timestamp()


def file_transfer(sandbox: UnionPaySandbox, form: Mapping[str, str], now: float) -> dict[str, str]:
    if form.get("txnSubType") != "01" or form.get("bizType") != p.QUERY_BIZ:
        raise p.AcpError("32", "txnSubType/bizType")
    if form.get("fileType", "00") != "00":
        raise p.AcpError("10", "fileType")
    day = day_of_mmdd(p.required(form, "settleDate"), now)
    if day is None:
        raise p.AcpError("10", "settleDate")
    if not ready(sandbox, day, now):
        raise p.AcpError("98")
    content = zip_of(sandbox, day, now)
    return {
        **p.answer(form, "00"),
        "settleDate": form["settleDate"],
        "fileType": "00",
        "fileName": zm.zip_name(sandbox.creds.mer_id, day),
        "fileContent": zm.encode_file_content(content),
    }


def zip_of(sandbox: UnionPaySandbox, day: date, now: float) -> bytes:
    lines = _faulty(sandbox, lines_of(sandbox, day), day)
    lines.sort(key=lambda line: (line.at, line.txn_type))
    mer_id = sandbox.creds.mer_id
    body = b"".join(line.record(mer_id) for line in lines)
    return zm.write_zip(mer_id, day, body, b"", datetime.fromtimestamp(now, p.BEIJING))


def lines_of(sandbox: UnionPaySandbox, day: date) -> list[Line]:
    start = _start(day).timestamp()
    end = (_start(day) + timedelta(days=1)).timestamp()
    store, mer_id = sandbox.store, sandbox.creds.mer_id
    lines = []
    for c in store.paid_between(mer_id, start, end):
        assert c.paid_at is not None
        at = datetime.fromtimestamp(c.paid_at, p.BEIJING)
        lines.append(Line(zm.CONSUME, c.order_id, c.query_id, "", c.trace_no, at, c.amount,
                          c.fee, c.amount, c.channel_type, c.acc_no))  # fmt: skip
    for b in store.backs_between(mer_id, start, end):
        orig = store.consume_by("query_id", b.orig_query_id)
        assert orig is not None and orig.paid_at is not None
        lines.append(
            Line(
                b.txn_type,
                b.order_id,
                b.query_id,
                b.orig_query_id,
                b.trace_no,
                datetime.fromtimestamp(b.done_at, p.BEIJING),
                b.amount,
                -b.fee_returned,
                -b.amount,
                orig.channel_type,
                orig.acc_no,
                orig.trace_no,
                p.beijing(orig.paid_at, "%m%d%H%M%S"),
            )
        )
    return lines


def _faulty(sandbox: UnionPaySandbox, lines: list[Line], day: date) -> list[Line]:
    faults = sandbox.faults
    config = faults.config
    kept = [line for line in lines if not faults.roll(config.missing_rate)]
    kept = [_one_fen_off(line) if faults.roll(config.wrong_amount_rate) else line for line in kept]
    return kept + [_made_up(sandbox, day) for _ in range(config.extra_lines)]


def _one_fen_off(line: Line) -> Line:
    sign = 1 if line.settle >= 0 else -1
    return replace(line, amount=line.amount + 1, settle=line.settle + sign)


def _made_up(sandbox: UnionPaySandbox, day: date) -> Line:
    """A consume line for a transaction the sandbox never had (长款 for the merchant's recon)."""
    faults = sandbox.faults
    at = _start(day) + timedelta(seconds=faults.randint(0, 86_399))
    at = min(at, datetime.now(p.BEIJING))
    amount = faults.randint(1, 100_000)
    fee = rate_fee(amount, sandbox.settings.fee_rate_ppm)
    order_id = f"SBXEXTRA{faults.randint(0, 10**16):016d}"
    return Line(zm.CONSUME, order_id, p.new_query_id(at.timestamp()), "", p.new_trace_no(), at,
                amount, fee, amount, note="sandbox extra line 沙箱多出")  # fmt: skip


def close_day(sandbox: UnionPaySandbox, text: object, now: float) -> dict[str, Any]:
    """End the business day ``text`` (YYYY-MM-DD) now: its file is available at once, and the
    day's net is settled into the reserve account."""
    day = None
    if isinstance(text, str) and _DAY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            day = None
    if day is None:
        raise p.SandboxError(400, "PARAM_ERROR", "date 必须是 YYYY-MM-DD")
    if day > datetime.fromtimestamp(now, p.BEIJING).date():
        raise p.SandboxError(400, "PARAM_ERROR", "不能结束尚未开始的营业日")
    closed_at = sandbox.store.close_day(day.isoformat(), now)
    return {
        "date": day.isoformat(),
        "closed_at": p.beijing(closed_at, "%Y-%m-%d %H:%M:%S"),
        "bill_ready": True,
        "settlement": settle(sandbox, day),
    }


def settle(sandbox: UnionPaySandbox, day: date) -> dict[str, object]:
    """Pay the day's 清算净额 (consumes − refunds − fees) into the reserve account, T+1."""
    net = sum(line.settle - line.fee for line in lines_of(sandbox, day))
    terms = sandbox.faults.config.settlement_terms(sandbox.settings.settle_days)
    mer_id = sandbox.creds.mer_id
    return settle_day(SETTLEMENT_PREFIX, mer_id, day, net, terms, PAYER_NAME)
