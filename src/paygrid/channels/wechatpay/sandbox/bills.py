"""Trade bills in the sandbox (交易账单), written from what the sandbox processed that day.

A day's bill exists once the day has ended (Asia/Shanghai), or once ``POST /sandbox/close-day``
ended it early; before that WeChat's answer is 400 ``STATEMENT_CREATING``. A closed day's bill is
generated from what the sandbox holds when it is asked for, so activity after the close shows in
later downloads. ``bill_type`` ALL lists payments (one row per payment, by its success time) and
refunds (one row per refund, by the time it was accepted; CLOSED refunds moved no money and are
left out), SUCCESS only payments, REFUND only refunds in the 29-column REFUND layout.
"""

from __future__ import annotations

import gzip
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from paygrid.channels.bank.settle import settle_day
from paygrid.channels.wechatpay.bill import BEIJING, TradeBillRow, rate_text, write_trade_bill
from paygrid.channels.wechatpay.capabilities import SETTLEMENT_PREFIX
from paygrid.channels.wechatpay.sandbox.faults import Faults
from paygrid.channels.wechatpay.sandbox.protocol import (
    BILL_URL_TTL_SECONDS,
    ApiError,
    bill_params,
    new_token,
    new_transaction_id,
)
from paygrid.channels.wechatpay.sandbox.refund_wire import new_refund_id
from paygrid.channels.wechatpay.sandbox.settings import SandboxSettings
from paygrid.channels.wechatpay.sandbox.store import Order, Refund, Store
from paygrid.kernel.money import rate_fee

DAY_SECONDS = 86_400  # Asia/Shanghai has no daylight saving
PAYER_NAME = "财付通支付科技有限公司"  # Tenpay, who pays WeChat Pay's settlements


def day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=BEIJING).timestamp()


def business_today() -> date:
    return datetime.now(BEIJING).date()


class BillDesk:
    """Answers ``GET /v3/bill/tradebill`` and the download, and closes business days."""

    def __init__(
        self, store: Store, faults: Faults, settings: Callable[[], SandboxSettings], mchid: str
    ) -> None:
        self._store = store
        self._faults = faults
        self._settings = settings
        self._mchid = mchid

    def close_day(self, payload: Mapping[str, Any]) -> dict[str, object]:
        """``POST /sandbox/close-day {"date": "YYYY-MM-DD"}``: end that business day now."""
        text = payload.get("date")
        try:
            day = date.fromisoformat(text) if isinstance(text, str) and len(text) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise ApiError(400, "PARAM_ERROR", "date 必须是 YYYY-MM-DD")
        if day > business_today():
            raise ApiError(400, "PARAM_ERROR", "不能结束尚未开始的营业日")
        closed_at = self._store.close_day(day.isoformat(), time.time())
        return {
            "date": day.isoformat(),
            "closed_at": datetime.fromtimestamp(closed_at, BEIJING).isoformat(timespec="seconds"),
            "bills_available": True,
            "settlement": self._settle(day),
        }

    def _settle(self, day: date) -> dict[str, object]:
        """Pay the day's net (payments − refunds − fees) into the reserve account at the bank,
        as WeChat Pay does on T+1 (结算), with the settlement faults set."""
        rows = self._rows(self._mchid, day, "ALL")
        net = sum(_net(row) for row in rows)
        terms = self._faults.config.settlement_terms(self._settings().settle_days)
        return settle_day(SETTLEMENT_PREFIX, self._mchid, day, net, terms, PAYER_NAME)

    def day_ended(self, day: date) -> bool:
        return day < business_today() or self._store.day_closed(day.isoformat())

    def trade_bill(
        self, auth_mchid: str, params: Mapping[str, str], base_url: str
    ) -> dict[str, str]:
        bill_date, bill_type, gzipped = bill_params(params)
        if not self.day_ended(bill_date):
            raise ApiError(400, "STATEMENT_CREATING", "请求的账单正在生成中")
        rows = self._rows(auth_mchid, bill_date, bill_type)
        if not rows:
            raise ApiError(400, "NO_STATEMENT_EXIST", "要申请的账单不存在")
        content = write_trade_bill(self._bill_faults(rows, bill_date, bill_type), bill_type)
        token = secrets.token_urlsafe(24)
        payload = gzip.compress(content, mtime=0) if gzipped else content
        expires = time.time() + BILL_URL_TTL_SECONDS
        self._store.save_bill(token, auth_mchid, payload, gzipped, expires)
        return {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(content).hexdigest(),  # of the file before gzip
            "download_url": f"{base_url.rstrip('/')}/v3/billdownload/file?token={token}",
        }

    def bill_file(self, auth_mchid: str, token: str | None) -> tuple[bytes, bool]:
        found = self._store.load_bill(token or "", auth_mchid, time.time())
        if found is None:
            raise ApiError(400, "INVALID_REQUEST", "下载地址无效或已过期")
        return found

    def _rows(self, mchid: str, day: date, bill_type: str) -> list[TradeBillRow]:
        start = day_start(day)
        end = start + DAY_SECONDS
        ppm = self._settings().fee_rate_ppm
        rows: list[TradeBillRow] = []
        if bill_type in ("ALL", "SUCCESS"):
            rows += [payment_row(o, ppm) for o in self._store.paid_between(mchid, start, end)]
        if bill_type in ("ALL", "REFUND"):
            for refund in self._store.refunds_created_between(mchid, start, end):
                order = self._store.get_order(mchid, refund.out_trade_no)
                if order is not None and refund.status != "CLOSED":
                    rows.append(refund_row(refund, order, ppm))
        return rows

    def _bill_faults(
        self, rows: list[TradeBillRow], day: date, bill_type: str
    ) -> list[TradeBillRow]:
        config = self._faults.config
        roll = self._faults.roll
        kept = [r for r in rows if not roll(config.missing_rate)]
        kept = [_one_fen_off(r) if roll(config.wrong_amount_rate) else r for r in kept]
        kept += [self._made_up_row(rows[0], day, bill_type) for _ in range(config.extra_lines)]
        return sorted(kept, key=_bill_time)

    def _made_up_row(self, like: TradeBillRow, day: date, bill_type: str) -> TradeBillRow:
        """A bill line for an order the sandbox never had (长款 for the merchant's recon); a
        refund of such an order in a REFUND bill."""
        start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
        at = min(start + timedelta(seconds=self._faults.randint(0, 86_399)), datetime.now(BEIJING))
        total = self._faults.randint(1, 100_000)
        ppm = self._settings().fee_rate_ppm
        row = TradeBillRow(
            trade_time=at,
            appid=like.appid,
            mchid=like.mchid,
            transaction_id=new_transaction_id(at.timestamp()),
            out_trade_no=f"SBXEXTRA{self._faults.randint(0, 10**16):016d}",
            openid="o" + new_token(27),
            trade_type="NATIVE",
            trade_state="SUCCESS",
            total=total,
            fee=rate_fee(total, ppm),
            rate=rate_text(ppm),
            description="sandbox extra line",
        )
        if bill_type != "REFUND":
            return row
        return replace(
            row,
            trade_state="REFUND",
            total=0,
            fee=-row.fee,
            refund_id=new_refund_id(at.timestamp()),
            out_refund_no=f"SBXEXTRARF{self._faults.randint(0, 10**16):016d}",
            refund=total,
            refund_requested=total,
            refund_type="ORIGINAL",
            refund_status="SUCCESS",
            refund_at=at,
            refund_success_at=at,
        )


def payment_row(order: Order, ppm: int) -> TradeBillRow:
    assert order.success_at is not None and order.transaction_id is not None
    return TradeBillRow(
        trade_time=datetime.fromtimestamp(order.success_at, BEIJING),
        appid=order.appid,
        mchid=order.mchid,
        transaction_id=order.transaction_id,
        out_trade_no=order.out_trade_no,
        openid=order.payer_openid or "",
        trade_type=order.trade_type,
        trade_state="SUCCESS",
        total=order.total,
        fee=rate_fee(order.total, ppm),
        rate=rate_text(ppm),
        description=order.description,
        attach=order.attach,
        bank_type=order.bank_type or "OTHERS",
    )


def refund_row(refund: Refund, order: Order, ppm: int) -> TradeBillRow:
    """A refund's row: 交易状态 REFUND, 订单金额 0, the refund's amounts, the fee it returns
    negative; 交易时间 (and 退款申请时间) the time it was accepted."""
    payment = payment_row(order, ppm)
    requested = datetime.fromtimestamp(refund.created_at, BEIJING)
    succeeded = refund.success_at
    return replace(
        payment,
        trade_state="REFUND",
        total=0,
        fee=-refund.fee_refund,
        refund_id=refund.refund_id,
        out_refund_no=refund.out_refund_no,
        refund=refund.refund,
        refund_requested=refund.refund,
        refund_type="ORIGINAL",
        refund_status=refund.status,
        refund_at=requested,
        refund_success_at=None if succeeded is None else datetime.fromtimestamp(succeeded, BEIJING),
        trade_time=requested,
    )


def _net(row: TradeBillRow) -> int:
    """What the row moves to the merchant: a payment its amount less the fee, a refund minus
    its amount plus the fee it returns (its fee is negative)."""
    settled = row.total if row.settlement_total is None else row.settlement_total
    return settled - row.refund - row.fee


def _bill_time(row: TradeBillRow) -> datetime:
    return row.refund_at or row.trade_time


def _one_fen_off(row: TradeBillRow) -> TradeBillRow:
    if row.trade_state == "REFUND":
        return replace(row, refund=row.refund + 1, refund_requested=row.refund_requested + 1)
    return replace(row, total=row.total + 1, settlement_total=row.total + 1)
