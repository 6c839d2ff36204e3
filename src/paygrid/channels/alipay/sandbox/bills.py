"""Trade bills (对账单): ``alipay.data.dataservice.bill.downloadurl.query`` and the download.

A day's bill (Asia/Shanghai day) is ready at ``bill_ready_hour`` the next morning, or at once
after ``POST /sandbox/close-day``; before that the answer is Alipay's 40004
``isp.bill_not_exist``. It is written at download time from what the sandbox processed on that
day: a 交易 line per payment (at its payment time) and a 退款 line per refund (at its refund
time), then the bill faults. The link is valid 30 seconds, as Alipay's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from paygrid.channels.alipay.bill import BEIJING, PAYMENT, REFUND, bill_file_stem
from paygrid.channels.alipay.capabilities import SETTLEMENT_PREFIX
from paygrid.channels.alipay.sandbox import protocol as p
from paygrid.channels.alipay.sandbox.bill_writer import BillRow, write_bill_zip
from paygrid.channels.bank.settle import settle_day
from paygrid.kernel.money import rate_fee

if TYPE_CHECKING:
    from paygrid.channels.alipay.sandbox.service import AlipaySandbox

BILL_URL_TTL_SECONDS = 30
DOWNLOAD_PATH = "/downloadBillFile.resource"
EARLIEST = date(2016, 1, 1)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")
NOT_EXIST = p.business("isp.bill_not_exist", "账单不存在")


def download_url(
    sandbox: AlipaySandbox, app_id: str, biz: Mapping[str, Any], base_url: str, now: float
) -> dict[str, Any]:
    bill_type = p.text_field(biz, "bill_type", 20)
    text = p.text_field(biz, "bill_date", 15) or ""
    if bill_type not in ("trade", "signcustomer") or not (_DAY.match(text) or _MONTH.match(text)):
        raise p.invalid("isv.invalid_arguments", "bill_type 或 bill_date 不合法")
    if bill_type != "trade" or _MONTH.match(text):  # balance and monthly bills: none here
        raise NOT_EXIST
    day = _date(text)
    if day is None:
        raise p.invalid("isv.invalid_arguments", "bill_date 不合法")
    if day < EARLIEST or not ready(sandbox, day, now):
        raise NOT_EXIST
    content = bill_zip(sandbox, app_id, day, now)
    token = secrets.token_urlsafe(24)
    name = f"{bill_file_stem(sandbox.creds.seller_id, day)}.csv.zip"
    sandbox.store.save_bill(token, app_id, name, content, now + BILL_URL_TTL_SECONDS)
    query = {
        "bizType": "trade",
        "userId": sandbox.creds.seller_id,
        "fileType": "csv.zip",
        "bizDates": f"{day:%Y%m%d}",
        "downloadFileName": name,
        "fileId": token,
    }
    url = f"{base_url.rstrip('/')}{DOWNLOAD_PATH}?{urlencode(query)}"
    return {"code": "10000", "msg": "Success", "bill_download_url": url}


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=BEIJING)


PAYER_NAME = "支付宝（中国）网络技术有限公司"


def ready(sandbox: AlipaySandbox, day: date, now: float) -> bool:
    """Closed early, or the next morning's bill hour has come."""
    if sandbox.store.day_closed_at(day.isoformat()) is not None:
        return True
    ready_at = _start(day) + timedelta(days=1, hours=sandbox.settings.bill_ready_hour)
    return now >= ready_at.timestamp()


def close_day(sandbox: AlipaySandbox, text: object, now: float) -> dict[str, Any]:
    """End the business day ``text`` (YYYY-MM-DD) now: its bill is available at once."""
    day = _date(text) if isinstance(text, str) and _DAY.match(text) else None
    if day is None:
        raise p.SandboxError(400, "PARAM_ERROR", "date 必须是 YYYY-MM-DD")
    if day > datetime.fromtimestamp(now, BEIJING).date():
        raise p.SandboxError(400, "PARAM_ERROR", "不能结束尚未开始的营业日")
    closed_at = sandbox.store.close_day(day.isoformat(), now)
    return {
        "date": day.isoformat(),
        "closed_at": p.beijing(closed_at),
        "bill_ready": True,
        "settlement": settle(sandbox, day),
    }


def settle(sandbox: AlipaySandbox, day: date) -> dict[str, object]:
    """Pay the day's net (收入 − 退款 − 服务费) into the reserve account at the bank, as Alipay
    does on T+1 (结算), with the settlement faults set."""
    start = _start(day).timestamp()
    end = (_start(day) + timedelta(days=1)).timestamp()
    app_id = sandbox.creds.app_id
    rows = _payment_rows(sandbox, app_id, start, end) + _refund_rows(sandbox, app_id, start, end)
    net = sum(row.received + row.service_fee for row in rows)  # refunds: both signs flipped
    terms = sandbox.faults.config.settlement_terms(sandbox.settings.settle_days)
    seller = sandbox.creds.seller_id
    return settle_day(SETTLEMENT_PREFIX, seller, day, net, terms, PAYER_NAME)


def bill_zip(sandbox: AlipaySandbox, app_id: str, day: date, now: float) -> bytes:
    start = _start(day).timestamp()
    end = (_start(day) + timedelta(days=1)).timestamp()
    rows = _payment_rows(sandbox, app_id, start, end) + _refund_rows(sandbox, app_id, start, end)
    rows = _faulty(sandbox, rows, day)
    rows.sort(key=lambda r: (r.finished_at, r.kind))
    exported = datetime.fromtimestamp(now, BEIJING)
    return write_bill_zip(sandbox.creds.seller_id, day, rows, exported)


def _at(epoch: float | None) -> datetime:
    assert epoch is not None
    return datetime.fromtimestamp(epoch, BEIJING)


def _payment_rows(sandbox: AlipaySandbox, app_id: str, start: float, end: float) -> list[BillRow]:
    return [
        BillRow(
            trade_no=t.trade_no,
            out_trade_no=t.out_trade_no,
            kind=PAYMENT,
            subject=t.subject,
            created_at=_at(t.created_at),
            finished_at=_at(t.paid_at),
            buyer_account=t.buyer_logon_id,
            total=t.total,
            received=t.total,
            service_fee=-t.fee,
            store_id=t.store_id,
        )
        for t in sandbox.store.paid_between(app_id, start, end)
    ]


def _refund_rows(sandbox: AlipaySandbox, app_id: str, start: float, end: float) -> list[BillRow]:
    rows = []
    for made in sandbox.store.refunds_between(app_id, start, end):
        trade = sandbox.store.get_trade(app_id, made.out_trade_no)
        assert trade is not None
        rows.append(
            BillRow(
                trade_no=made.trade_no,
                out_trade_no=made.out_trade_no,
                kind=REFUND,
                subject=trade.subject,
                created_at=_at(trade.created_at),
                finished_at=_at(made.refunded_at),
                buyer_account=trade.buyer_logon_id,
                total=trade.total,
                received=-made.amount,
                service_fee=made.fee_returned,
                out_request_no=made.out_request_no,
                store_id=trade.store_id,
            )
        )
    return rows


def _faulty(sandbox: AlipaySandbox, rows: list[BillRow], day: date) -> list[BillRow]:
    faults = sandbox.faults
    config = faults.config
    kept = [r for r in rows if not faults.roll(config.missing_rate)]
    kept = [_one_fen_off(r) if faults.roll(config.wrong_amount_rate) else r for r in kept]
    return kept + [_made_up(sandbox, day) for _ in range(config.extra_lines)]


def _one_fen_off(row: BillRow) -> BillRow:
    if row.kind == REFUND:
        return replace(row, received=row.received - 1)
    return replace(row, total=row.total + 1, received=row.received + 1)


def _made_up(sandbox: AlipaySandbox, day: date) -> BillRow:
    """A payment line for a trade the sandbox never had (长款 for the merchant's recon)."""
    faults = sandbox.faults
    at = _start(day) + timedelta(seconds=faults.randint(0, 86_399))
    at = min(at, datetime.now(BEIJING))
    total = faults.randint(1, 100_000)
    return BillRow(
        trade_no=p.new_trade_no(at.timestamp()),
        out_trade_no=f"SBXEXTRA{faults.randint(0, 10**16):016d}",
        kind=PAYMENT,
        subject="sandbox extra line",
        created_at=at,
        finished_at=at,
        buyer_account=p.new_buyer()[1],
        total=total,
        received=total,
        service_fee=-rate_fee(total, sandbox.settings.fee_rate_ppm),
    )
