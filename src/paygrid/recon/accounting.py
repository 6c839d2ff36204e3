"""The accounting flow against the payment flow (账务流 vs 支付流) of one channel's business
date: every successful payment has its capture voucher and every successful refund its
refund voucher, for the same amount on the channel's pending-clearing account; no voucher
without its business record. Both flows are paygrid's own, in its database: one statement
each.

``grace``: a success younger than this may have its voucher still on the bus (the ledger
posts from the outbox); it is not yet missing. Younger counts from when paygrid learned it:
a success repaired from the bill a moment ago (paid yesterday) is given the grace too.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, text

from paygrid.recon.results import Difference
from paygrid.reports.merchant_bill import day_bounds
from paygrid.storage.database import Database
from paygrid.storage.types import UTCDateTime

_MISSING = """
SELECT 'PAYMENT' AS flow, p.payment_id, p.out_trade_no, NULL AS refund_id,
       NULL AS out_refund_no, o.channel_trade_no, p.amount AS paygrid_amount
FROM payments p
JOIN channel_orders o ON o.payment_id = p.payment_id AND o.status = 'PAID' AND o.channel = :channel
LEFT JOIN ledger_vouchers v ON v.kind = 'capture' AND v.business_ref = p.payment_id
WHERE p.status = 'SUCCESS' AND p.paid_at >= :start AND p.paid_at < :end
  AND p.paid_at < :settled AND v.voucher_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM payment_transitions t WHERE t.payment_id = p.payment_id
                  AND t.to_status = 'SUCCESS' AND t.at >= :settled)
UNION ALL
SELECT 'REFUND', r.payment_id, p.out_trade_no, r.refund_id, r.out_refund_no,
       r.channel_refund_no, r.amount
FROM refunds r
JOIN payments p ON p.payment_id = r.payment_id
LEFT JOIN ledger_vouchers v ON v.kind = 'refund' AND v.business_ref = r.refund_id
WHERE r.channel = :channel AND r.status = 'SUCCESS' AND r.succeeded_at >= :start
  AND r.succeeded_at < :end AND r.succeeded_at < :settled AND r.updated_at < :settled
  AND v.voucher_id IS NULL
"""
# The times bound as stored (UTC; naive text on SQLite): a zone's aware datetime compared as
# text on SQLite missed every payment of the first 8 hours of a Beijing day.
_MISSING_QUERY = text(_MISSING).bindparams(
    *(bindparam(name, type_=UTCDateTime) for name in ("start", "end", "settled"))
)
# A voucher of the date on the channel's pending clearing: its business record and amount.
_BOOKED = """
SELECT v.kind, v.business_ref, e.amount AS booked,
       p.payment_id, p.out_trade_no, p.status AS payment_status, p.amount AS payment_amount,
       r.refund_id, r.out_refund_no, r.status AS refund_status, r.amount AS refund_amount
FROM ledger_vouchers v
JOIN ledger_entries e ON e.voucher_id = v.voucher_id
     AND e.account_code LIKE :clearing
     AND e.direction = CASE v.kind WHEN 'capture' THEN 'D' ELSE 'C' END
LEFT JOIN refunds r ON v.kind = 'refund' AND r.refund_id = v.business_ref
LEFT JOIN payments p ON p.payment_id = CASE v.kind WHEN 'capture' THEN v.business_ref
                                                     ELSE r.payment_id END
WHERE v.business_date = :day AND v.kind IN ('capture', 'refund')
"""


def accounting_differences(
    db: Database, channel: str, day: date, zone: str, settled_before: datetime
) -> list[Difference]:
    """VOUCHER_MISSING, VOUCHER_ORPHAN and VOUCHER_AMOUNT_MISMATCH of ``channel``'s ``day``."""
    start, end = day_bounds(day, zone)
    params = {"channel": channel, "start": start, "end": end, "settled": settled_before}
    with db.read() as conn:
        missing = conn.execute(_MISSING_QUERY, params).all()
        booked = conn.execute(
            text(_BOOKED), {"clearing": f"pending_clearing:{channel}:%", "day": day.isoformat()}
        ).all()
    found = [
        Difference(
            "VOUCHER_MISSING",
            r.payment_id,
            r.out_trade_no,
            r.refund_id,
            r.out_refund_no,
            r.channel_trade_no,
            int(r.paygrid_amount),
            None,
            flow=str(r.flow),
        )
        for r in missing
    ]
    return found + [d for d in map(_booked_difference, booked) if d is not None]


def _booked_difference(r: Any) -> Difference | None:
    capture = r.kind == "capture"
    status = r.payment_status if capture else r.refund_status
    amount = r.payment_amount if capture else r.refund_amount
    if status != "SUCCESS":
        kind = "VOUCHER_ORPHAN"
    elif int(amount) != int(r.booked):
        kind = "VOUCHER_AMOUNT_MISMATCH"
    else:
        return None
    return Difference(
        kind=kind,
        payment_id=r.payment_id
        if r.payment_id is not None
        else (r.business_ref if capture else None),
        out_trade_no=r.out_trade_no,
        refund_id=None if capture else r.refund_id or r.business_ref,
        out_refund_no=None if capture else r.out_refund_no,
        channel_trade_no=None,
        paygrid_amount=int(amount) if amount is not None and status == "SUCCESS" else None,
        channel_amount=None,
        booked_amount=int(r.booked),
        flow="PAYMENT" if capture else "REFUND",
    )
