"""The accounting flow's query binds its times as stored: on SQLite a time is UTC text, and a
Beijing-zoned bound compared as text missed every payment of the first 8 hours of a Beijing
day (found by CI after Beijing midnight)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from paygrid.recon.accounting import accounting_differences
from paygrid.storage.database import Database, sqlite_url
from paygrid.storage.schema import channel_orders, merchants, payments

DAY = date(2026, 12, 3)
EARLY = datetime(2026, 12, 2, 17, 5, tzinfo=UTC)  # 01:05 in Beijing on DAY


def test_a_payment_of_the_small_hours_without_its_voucher_is_missing(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    db.migrate()
    with db.transaction() as conn:
        conn.execute(
            merchants.insert().values(
                mchid="m1", name="m", status="ACTIVE", fee_rate_ppm=0, methods="x", created_at=EARLY
            )
        )
        conn.execute(
            payments.insert().values(
                payment_id="pay_1",
                mchid="m1",
                out_trade_no="o1",
                amount=100,
                currency="CNY",
                description="d",
                notify_url="http://127.0.0.1/n",
                method="native",
                status="SUCCESS",
                expire_at=EARLY + timedelta(hours=2),
                request_hash="0" * 64,
                refunded_amount=0,
                refunding_amount=0,
                paid_at=EARLY,
                cashier_token="t",
                created_at=EARLY,
                updated_at=EARLY,
                version=3,
            )
        )
        conn.execute(
            channel_orders.insert().values(
                order_id="co_1",
                payment_id="pay_1",
                channel="ch",
                method="native",
                channel_ref="P1",
                status="PAID",
                created_at=EARLY,
                updated_at=EARLY,
            )
        )
    found = accounting_differences(db, "ch", DAY, "Asia/Shanghai", EARLY + timedelta(hours=1))
    db.dispose()
    assert [(d.kind, d.payment_id) for d in found] == [("VOUCHER_MISSING", "pay_1")]
