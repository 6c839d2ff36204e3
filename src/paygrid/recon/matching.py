"""The classify-join of one channel's business date (DuckDB): paygrid's payments and refunds
against the channel's bill lines, one full outer join per flow, each pair classified in the
same pass. The channel is the authority for status; the contracted rate for its fee.

Tables it reads (created by :mod:`paygrid.recon.run`): ``bill`` (recon's normalised bill
lines), ``our_payments`` (channel_ref, payment_id, out_trade_no, amount, status, paid_on,
paid_at, repaired), ``our_refunds`` (channel_ref, refund_id, out_refund_no, payment_id,
out_trade_no, amount, status, payment_ref: the payment's reference at the channel, repaired).
``repaired``: an earlier run repaired the record's status from the bill; it is reported as
``STATUS_REPAIRED`` again, so a run repeated (or restarted after a crash) reports the same.
What it leaves: ``pay_flow`` and ``refund_flow``, one row per reference with its ``outcome``
(the text columns of a MATCHED row left NULL: only the differences need them).
"""

from __future__ import annotations

import duckdb

MATCHED = "MATCHED"
OUR_PAYMENTS = """CREATE TEMP TABLE our_payments (
    channel_ref VARCHAR, payment_id VARCHAR, out_trade_no VARCHAR, amount BIGINT,
    status VARCHAR, paid_on DATE, paid_at TIMESTAMP, repaired BOOLEAN)"""
OUR_REFUNDS = """CREATE TEMP TABLE our_refunds (
    channel_ref VARCHAR, refund_id VARCHAR, out_refund_no VARCHAR, payment_id VARCHAR,
    out_trade_no VARCHAR, amount BIGINT, status VARCHAR, payment_ref VARCHAR,
    repaired BOOLEAN)"""

# The text columns of a reference are kept only where it differs: a day of 10 million matched
# lines would otherwise be copied whole into pay_flow (and spill to disk under a memory limit).
_PAY_DETAIL = ("payment_id", "out_trade_no", "status", "channel_trade_no")
_REFUND_DETAIL = (
    "refund_id",
    "out_refund_no",
    "payment_id",
    "out_trade_no",
    "payment_ref",
    "status",
    "channel_trade_no",
    "channel_status",
)
_PAY_FLOW = """
SELECT
    coalesce(o.channel_ref, b.payment_ref) AS ref,
    o.payment_id, o.out_trade_no, o.amount AS paygrid_amount, o.status, o.paid_on, o.paid_at,
    b.amount AS channel_amount, b.fee AS channel_fee, b.channel_trade_no,
    (b.amount * {ppm} + 500000) // 1000000 AS expected_fee,
    CASE
        WHEN b.payment_ref IS NULL THEN 'PAYGRID_ONLY'
        WHEN o.channel_ref IS NULL THEN 'CHANNEL_ONLY'
        WHEN o.status <> 'SUCCESS' OR o.repaired THEN 'STATUS_REPAIRED'
        WHEN o.amount <> b.amount THEN 'AMOUNT_MISMATCH'
        WHEN b.fee <> (b.amount * {ppm} + 500000) // 1000000 THEN 'FEE_MISMATCH'
        WHEN o.paid_on <> DATE '{day}' THEN 'CROSS_DAY'
        ELSE 'MATCHED'
    END AS outcome
FROM our_payments o
FULL OUTER JOIN (SELECT * FROM bill WHERE kind = 'PAYMENT') b ON o.channel_ref = b.payment_ref
WHERE b.payment_ref IS NOT NULL OR (o.status = 'SUCCESS' AND o.paid_on = DATE '{day}')
"""
_REFUND_FLOW = """
SELECT
    coalesce(o.channel_ref, b.refund_ref) AS ref,
    o.refund_id, o.out_refund_no, o.payment_id, o.out_trade_no, o.payment_ref,
    o.amount AS paygrid_amount, o.status,
    b.amount AS channel_amount, b.channel_trade_no, b.status AS channel_status,
    CASE
        WHEN b.refund_ref IS NULL THEN 'PAYGRID_ONLY'
        WHEN o.channel_ref IS NULL THEN 'CHANNEL_ONLY'
        WHEN o.amount <> b.amount THEN 'AMOUNT_MISMATCH'
        WHEN (o.status <> 'SUCCESS' OR o.repaired) AND b.status = 'SUCCESS' THEN 'STATUS_REPAIRED'
        ELSE 'MATCHED'
    END AS outcome
FROM our_refunds o
FULL OUTER JOIN (SELECT * FROM bill WHERE kind = 'REFUND') b ON o.channel_ref = b.refund_ref
WHERE b.refund_ref IS NOT NULL OR o.status = 'SUCCESS'
"""


def classify(con: duckdb.DuckDBPyConnection, day: str, fee_rate_ppm: int) -> None:
    """Build ``pay_flow`` and ``refund_flow`` for business date ``day`` (YYYY-MM-DD)."""
    assert 0 <= fee_rate_ppm <= 1_000_000
    pay_flow = _PAY_FLOW.format(day=day, ppm=int(fee_rate_ppm))
    con.execute(_only_differences("pay_flow", pay_flow, _PAY_DETAIL))
    con.execute(_only_differences("refund_flow", _REFUND_FLOW, _REFUND_DETAIL))


def _only_differences(table: str, select: str, detail: tuple[str, ...]) -> str:
    """``table`` from ``select``, the ``detail`` columns NULL on the MATCHED rows."""
    kept = ", ".join(f"CASE WHEN outcome <> 'MATCHED' THEN {c} END AS {c}" for c in detail)
    return f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * REPLACE ({kept}) FROM ({select})"
