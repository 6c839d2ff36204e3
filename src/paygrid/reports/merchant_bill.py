"""The merchant's own daily bill (商户对账单): every payment that succeeded and every refund (退款)
that succeeded on a business date (账期, cut-off 00:00 in the configured zone), with the fee we
booked (or gave back) and the net owed, so the merchant can reconcile against paygrid line by
line. CSV, amounts in minor units (fen); a refund's amount, fee and net are negative."""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, select

from paygrid.storage.database import Database
from paygrid.storage.schema import (
    channel_orders,
    ledger_entries,
    ledger_vouchers,
    payments,
    refunds,
)

COLUMNS = (
    "paid_at",  # when the money moved: the payment's success, or the refund's
    "payment_id",
    "out_trade_no",
    "type",  # PAYMENT | REFUND
    "channel",
    "channel_trade_no",
    "currency",
    "amount",
    "fee",
    "net",
    "description",
    "refund_id",
    "out_refund_no",
)
MAX_ROWS = 1_000_000


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """The UTC instants where business date ``day`` starts and ends."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tz)
    return start, start + timedelta(days=1)


def _payments_of_day(mchid: str, start: datetime, end: datetime) -> Select[Any]:
    """Payments that succeeded in [start, end), with the fee their capture voucher charged."""
    fee = ledger_entries.alias("fee")
    return (
        select(
            payments.c.paid_at.label("at"),
            payments,
            channel_orders.c.channel,
            channel_orders.c.channel_trade_no,
            fee.c.amount.label("fee_amount"),
        )
        .select_from(payments)
        .join(
            channel_orders,
            and_(
                channel_orders.c.payment_id == payments.c.payment_id,
                channel_orders.c.status == "PAID",
            ),
        )
        .outerjoin(
            ledger_vouchers,
            and_(
                ledger_vouchers.c.kind == "capture",
                ledger_vouchers.c.business_ref == payments.c.payment_id,
            ),
        )
        .outerjoin(
            fee,
            and_(
                fee.c.voucher_id == ledger_vouchers.c.voucher_id,
                fee.c.account_code.like("fee_income:%"),
            ),
        )
        .where(
            payments.c.mchid == mchid,
            payments.c.status == "SUCCESS",
            payments.c.paid_at >= start,
            payments.c.paid_at < end,
        )
        .order_by(payments.c.paid_at, payments.c.payment_id)
        .limit(MAX_ROWS)
    )


def _refunds_of_day(mchid: str, start: datetime, end: datetime) -> Select[Any]:
    """Refunds that succeeded in [start, end), with the fee their refund voucher gave back."""
    fee = ledger_entries.alias("fee")
    return (
        select(
            refunds.c.succeeded_at.label("at"),
            refunds.c.refund_id,
            refunds.c.out_refund_no,
            refunds.c.amount,
            refunds.c.currency,
            refunds.c.channel,
            payments.c.payment_id,
            payments.c.out_trade_no,
            payments.c.description,
            channel_orders.c.channel_trade_no,
            fee.c.amount.label("fee_amount"),
        )
        .select_from(refunds)
        .join(payments, payments.c.payment_id == refunds.c.payment_id)
        .join(channel_orders, channel_orders.c.order_id == refunds.c.order_id)
        .outerjoin(
            ledger_vouchers,
            and_(
                ledger_vouchers.c.kind == "refund",
                ledger_vouchers.c.business_ref == refunds.c.refund_id,
            ),
        )
        .outerjoin(
            fee,
            and_(
                fee.c.voucher_id == ledger_vouchers.c.voucher_id,
                fee.c.direction == "D",
                fee.c.account_code.like("fee_income:%"),
            ),
        )
        .where(
            refunds.c.mchid == mchid,
            refunds.c.status == "SUCCESS",
            refunds.c.succeeded_at >= start,
            refunds.c.succeeded_at < end,
        )
        .order_by(refunds.c.succeeded_at, refunds.c.refund_id)
        .limit(MAX_ROWS)
    )


def _payment_line(row: Any, tz: ZoneInfo) -> list[object]:
    fee = int(row.fee_amount or 0)
    return [
        row.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        row.payment_id,
        row.out_trade_no,
        "PAYMENT",
        row.channel,
        row.channel_trade_no or "",
        row.currency,
        row.amount,
        fee,
        row.amount - fee,
        row.description,
        "",
        "",
    ]


def _refund_line(row: Any, tz: ZoneInfo) -> list[object]:
    """The money going back: amount, the fee returned and the net, all negative."""
    fee_returned = int(row.fee_amount or 0)
    return [
        row.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        row.payment_id,
        row.out_trade_no,
        "REFUND",
        row.channel,
        row.channel_trade_no or "",
        row.currency,
        -row.amount,
        -fee_returned,
        -(row.amount - fee_returned),
        row.description,
        row.refund_id,
        row.out_refund_no,
    ]


def _in_time_order(
    paid: Sequence[Any], refunded: Sequence[Any], tz: ZoneInfo
) -> Iterator[list[object]]:
    """Both kinds of line, merged by the time the money moved (then by id), at most MAX_ROWS."""
    lines = heapq.merge(
        ((row.at, row.payment_id, _payment_line, row) for row in paid),
        ((row.at, row.refund_id, _refund_line, row) for row in refunded),
        key=lambda entry: (entry[0], entry[1]),
    )
    for count, (_, _, render, row) in enumerate(lines):
        if count >= MAX_ROWS:
            return
        yield render(row, tz)


def merchant_bill_csv(db: Database, mchid: str, day: date, zone: str) -> str:
    start, end = day_bounds(day, zone)
    with db.read() as conn:
        paid = conn.execute(_payments_of_day(mchid, start, end)).all()
        refunded = conn.execute(_refunds_of_day(mchid, start, end)).all()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_in_time_order(paid, refunded, ZoneInfo(zone)))
    return out.getvalue()
