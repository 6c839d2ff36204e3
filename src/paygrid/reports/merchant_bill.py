"""The merchant's own daily bill (商户对账单): every payment that succeeded on a business date
(账期, cut-off 00:00 in the configured zone), with the fee we booked and the net owed, so the
merchant can reconcile against paygrid line by line. CSV, amounts in minor units (fen)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select

from paygrid.storage.database import Database
from paygrid.storage.schema import channel_orders, ledger_entries, ledger_vouchers, payments

COLUMNS = (
    "paid_at",
    "payment_id",
    "out_trade_no",
    "type",
    "channel",
    "channel_trade_no",
    "currency",
    "amount",
    "fee",
    "net",
    "description",
)
MAX_ROWS = 1_000_000


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """The UTC instants where business date ``day`` starts and ends."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tz)
    return start, start + timedelta(days=1)


def merchant_bill_csv(db: Database, mchid: str, day: date, zone: str) -> str:
    start, end = day_bounds(day, zone)
    fee = ledger_entries.alias("fee")
    stmt = (
        select(
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
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    tz = ZoneInfo(zone)
    with db.read() as conn:
        for row in conn.execute(stmt):
            fee_amount = int(row.fee_amount or 0)
            writer.writerow(
                [
                    row.paid_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
                    row.payment_id,
                    row.out_trade_no,
                    "PAYMENT",
                    row.channel,
                    row.channel_trade_no or "",
                    row.currency,
                    row.amount,
                    fee_amount,
                    row.amount - fee_amount,
                    row.description,
                ]
            )
    return out.getvalue()
