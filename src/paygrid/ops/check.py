"""`paygrid check`: verify the money invariants of DESIGN.md on the stored data.

Each check is one SQL question whose rows are violations; nothing here trusts the code that
wrote the data, so it also catches a bug or a hand edit in the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, text

from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database


@dataclass(frozen=True, slots=True)
class Violation:
    code: str
    detail: str


# The refund invariants (DESIGN.md 3): refunds never exceed their payment, the payment's
# counters equal its refunds, exactly one voucher per successful refund and none without it,
# the fee returned never more than charged and all of it once the payment is refunded whole.
REFUND_CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "REFUNDS_EXCEED_PAYMENT",
        """
        SELECT p.payment_id, p.amount, SUM(r.amount) AS refunds FROM payments p
        JOIN refunds r ON r.payment_id = p.payment_id AND r.status <> 'FAILED'
        GROUP BY p.payment_id, p.amount HAVING SUM(r.amount) > p.amount""",
        "payment {payment_id} of {amount} has refunds of {refunds} not failed",
    ),
    (
        "REFUNDED_AMOUNT_MISMATCH",
        """
        SELECT p.payment_id, p.refunded_amount, p.refunding_amount,
               COALESCE(SUM(CASE WHEN r.status='SUCCESS' THEN r.amount END), 0) AS succeeded,
               COALESCE(SUM(CASE WHEN r.status='PROCESSING' THEN r.amount END), 0) AS processing
        FROM payments p LEFT JOIN refunds r ON r.payment_id = p.payment_id
        GROUP BY p.payment_id, p.refunded_amount, p.refunding_amount
        HAVING p.refunded_amount <> COALESCE(SUM(CASE WHEN r.status='SUCCESS' THEN r.amount END), 0)
            OR p.refunding_amount
               <> COALESCE(SUM(CASE WHEN r.status='PROCESSING' THEN r.amount END), 0)""",
        "payment {payment_id} says refunded {refunded_amount}, in progress {refunding_amount}; "
        "its refunds: {succeeded} succeeded, {processing} processing",
    ),
    (
        "REFUND_VOUCHER_MISSING",
        """
        SELECT r.refund_id, r.payment_id FROM refunds r
        LEFT JOIN ledger_vouchers v ON v.kind='refund' AND v.business_ref = r.refund_id
        WHERE r.status='SUCCESS' AND v.voucher_id IS NULL AND r.updated_at < :cutoff""",
        "successful refund {refund_id} of {payment_id} has no refund voucher",
    ),
    (
        "REFUND_VOUCHER_DUPLICATE",
        """
        SELECT business_ref, COUNT(*) AS n FROM ledger_vouchers WHERE kind='refund'
        GROUP BY business_ref HAVING COUNT(*) > 1""",
        "refund {business_ref} has {n} refund vouchers",
    ),
    (
        "VOUCHER_WITHOUT_BUSINESS",
        """
        SELECT v.voucher_id, v.business_ref FROM ledger_vouchers v
        LEFT JOIN refunds r ON r.refund_id = v.business_ref
        WHERE v.kind='refund' AND (r.refund_id IS NULL OR r.status <> 'SUCCESS'
              OR v.parent_ref IS NULL OR v.parent_ref <> r.payment_id)""",
        "refund voucher {voucher_id} has no successful refund {business_ref}",
    ),
    (
        "REFUND_VOUCHER_AMOUNT_MISMATCH",
        """
        SELECT r.refund_id, r.amount, COALESCE(SUM(e.amount), 0) AS booked FROM refunds r
        JOIN ledger_vouchers v ON v.kind='refund' AND v.business_ref = r.refund_id
        LEFT JOIN ledger_entries e ON e.voucher_id = v.voucher_id AND e.direction='C'
             AND e.account_code LIKE 'pending_clearing:%'
        GROUP BY r.refund_id, r.amount HAVING COALESCE(SUM(e.amount), 0) <> r.amount""",
        "refund {refund_id} of {amount} was booked as {booked}",
    ),
    (
        "REFUND_FEE_MISMATCH",
        """
        SELECT p.payment_id, p.amount, charged.fee AS charged, back.fee AS returned,
               back.refunded
        FROM (SELECT v.business_ref, COALESCE(SUM(e.amount), 0) AS fee FROM ledger_vouchers v
              LEFT JOIN ledger_entries e ON e.voucher_id = v.voucher_id AND e.direction='C'
                   AND e.account_code LIKE 'fee_income:%'
              WHERE v.kind='capture' GROUP BY v.business_ref) charged
        JOIN (SELECT v.parent_ref,
                     SUM(CASE WHEN e.direction='D' AND e.account_code LIKE 'fee_income:%'
                         THEN e.amount ELSE 0 END) AS fee,
                     SUM(CASE WHEN e.direction='C' AND e.account_code LIKE 'pending_clearing:%'
                         THEN e.amount ELSE 0 END) AS refunded
              FROM ledger_vouchers v JOIN ledger_entries e ON e.voucher_id = v.voucher_id
              WHERE v.kind='refund' GROUP BY v.parent_ref) back
             ON back.parent_ref = charged.business_ref
        JOIN payments p ON p.payment_id = charged.business_ref
        WHERE back.fee > charged.fee OR (back.refunded = p.amount AND back.fee <> charged.fee)""",
        "payment {payment_id}: its refunds ({refunded} of {amount}) returned {returned} of the "
        "fee {charged}",
    ),
    (
        "REFUND_PROCESSING",
        """
        SELECT refund_id, payment_id, channel, channel_state FROM refunds
        WHERE status='PROCESSING' AND created_at < :cutoff""",
        "refund {refund_id} of {payment_id} is still PROCESSING past the grace period "
        "({channel} says {channel_state})",
    ),
    (
        "REFUND_CALLBACK_ANOMALY",
        """
        SELECT channel, notify_id, refund_id, refund_state, outcome, detail
        FROM refund_callbacks
        WHERE outcome IN ('ILLEGAL_TRANSITION', 'AMOUNT_MISMATCH', 'MISSING_FIELD',
                          'MERCHANT_MISMATCH', 'PROTOCOL_MISMATCH')""",
        "{channel} report {notify_id} on refund {refund_id} said {refund_state}: "
        "{outcome} ({detail})",
    ),
)

# (code, SQL, how to describe a row). ``:cutoff`` is now minus the grace period: events
# younger than that may still be on their way through the bus.
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "UNBALANCED_VOUCHER",
        """
        SELECT voucher_id, currency,
               SUM(CASE WHEN direction='D' THEN amount ELSE -amount END) AS net
        FROM ledger_entries GROUP BY voucher_id, currency
        HAVING SUM(CASE WHEN direction='D' THEN amount ELSE -amount END) <> 0""",
        "voucher {voucher_id} is off by {net} {currency}",
    ),
    (
        "BAD_ENTRY_AMOUNT",
        "SELECT id, voucher_id, amount FROM ledger_entries WHERE amount <= 0",
        "entry {id} of voucher {voucher_id} has amount {amount}",
    ),
    (
        "EMPTY_VOUCHER",
        """
        SELECT v.voucher_id FROM ledger_vouchers v
        LEFT JOIN ledger_entries e ON e.voucher_id = v.voucher_id
        WHERE e.id IS NULL""",
        "voucher {voucher_id} has no entries",
    ),
    (
        "CAPTURE_MISSING",
        """
        SELECT p.payment_id FROM payments p
        LEFT JOIN ledger_vouchers v ON v.kind='capture' AND v.business_ref = p.payment_id
        WHERE p.status='SUCCESS' AND v.voucher_id IS NULL AND p.paid_at < :cutoff""",
        "successful payment {payment_id} has no capture voucher",
    ),
    (
        "CAPTURE_DUPLICATE",
        """
        SELECT business_ref, COUNT(*) AS n FROM ledger_vouchers WHERE kind='capture'
        GROUP BY business_ref HAVING COUNT(*) > 1""",
        "payment {business_ref} has {n} capture vouchers",
    ),
    (
        "VOUCHER_WITHOUT_BUSINESS",
        """
        SELECT v.voucher_id, v.business_ref FROM ledger_vouchers v
        LEFT JOIN payments p ON p.payment_id = v.business_ref
        WHERE v.kind='capture' AND (p.payment_id IS NULL OR p.status <> 'SUCCESS')""",
        "capture voucher {voucher_id} has no successful payment {business_ref}",
    ),
    (
        # A 差错 case's adjustment or write-off belongs to a case resolved with it.
        "CASE_VOUCHER_WITHOUT_CASE",
        """
        SELECT v.voucher_id, v.business_ref FROM ledger_vouchers v
        LEFT JOIN recon_case_steps s ON s.case_id = v.business_ref
             AND s.voucher_id = v.voucher_id
        WHERE v.kind IN ('recon_adjustment', 'recon_write_off') AND s.case_id IS NULL""",
        "voucher {voucher_id} resolves no case {business_ref}",
    ),
    (
        "CAPTURE_AMOUNT_MISMATCH",
        """
        SELECT p.payment_id, p.amount, e.amount AS booked FROM payments p
        JOIN ledger_vouchers v ON v.kind='capture' AND v.business_ref = p.payment_id
        JOIN ledger_entries e ON e.voucher_id = v.voucher_id AND e.direction='D'
             AND e.account_code LIKE 'pending_clearing:%'
        WHERE e.amount <> p.amount""",
        "payment {payment_id} of {amount} was captured as {booked}",
    ),
    (
        # An account's balance is the sum of its shards (ledger_balances); both sides are
        # summed apart, so neither join multiplies the other.
        "BALANCE_MISMATCH",
        """
        SELECT a.code, COALESCE(b.d, 0) AS debit_total, COALESCE(b.c, 0) AS credit_total,
               COALESCE(e.d, 0) AS d, COALESCE(e.c, 0) AS c
        FROM ledger_accounts a
        LEFT JOIN (SELECT code, SUM(debit_total) AS d, SUM(credit_total) AS c
                   FROM ledger_balances GROUP BY code) b ON b.code = a.code
        LEFT JOIN (SELECT account_code,
                          SUM(CASE WHEN direction='D' THEN amount ELSE 0 END) AS d,
                          SUM(CASE WHEN direction='C' THEN amount ELSE 0 END) AS c
                   FROM ledger_entries GROUP BY account_code) e ON e.account_code = a.code
        WHERE COALESCE(b.d, 0) <> COALESCE(e.d, 0) OR COALESCE(b.c, 0) <> COALESCE(e.c, 0)""",
        "account {code} says D {debit_total} C {credit_total}, its entries D {d} C {c}",
    ),
    (
        "TRIAL_BALANCE",
        """
        SELECT currency, SUM(CASE WHEN direction='D' THEN amount ELSE -amount END) AS net
        FROM ledger_entries GROUP BY currency
        HAVING SUM(CASE WHEN direction='D' THEN amount ELSE -amount END) <> 0""",
        "trial balance in {currency} is {net}, not zero",
    ),
    (
        "REFUND_EXCEEDS_PAYMENT",
        """
        SELECT payment_id, amount, refunded_amount, refunding_amount FROM payments
        WHERE refunded_amount + refunding_amount > amount OR refunded_amount < 0
              OR refunding_amount < 0""",
        "payment {payment_id} of {amount} has refunded {refunded_amount} "
        "and {refunding_amount} in progress",
    ),
    (
        "NON_POSITIVE_PAYMENT",
        "SELECT payment_id, amount FROM payments WHERE amount <= 0",
        "payment {payment_id} has amount {amount}",
    ),
    (
        "EVENT_MISSING",
        """
        SELECT p.payment_id FROM payments p
        LEFT JOIN outbox o ON o.aggregate_id = p.payment_id AND o.event_type='payment.succeeded'
        WHERE p.status='SUCCESS' AND o.seq IS NULL""",
        "successful payment {payment_id} emitted no payment.succeeded event",
    ),
    (
        "EVENT_DUPLICATE",
        """
        SELECT aggregate_id, COUNT(*) AS n FROM outbox WHERE event_type='payment.succeeded'
        GROUP BY aggregate_id HAVING COUNT(*) > 1""",
        "payment {aggregate_id} emitted payment.succeeded {n} times",
    ),
    (
        "OUTBOX_DEAD",
        "SELECT event_id, event_type, last_error FROM outbox WHERE dead",
        "event {event_id} ({event_type}) was dead-lettered: {last_error}",
    ),
    (
        "OUTBOX_STUCK",
        """
        SELECT event_id, event_type FROM outbox
        WHERE published_at IS NULL AND NOT dead AND created_at < :cutoff""",
        "event {event_id} ({event_type}) is unpublished past the grace period",
    ),
    (
        "CAPTURE_UNCONFIRMED",
        """
        SELECT payment_id, amount, currency, confirmed_amount, confirmed_currency FROM payments
        WHERE status='SUCCESS' AND (confirmed_amount IS NULL OR confirmed_currency IS NULL
              OR confirmed_amount <> amount OR confirmed_currency <> currency)""",
        "successful payment {payment_id} of {amount} {currency} was confirmed by the channel "
        "as {confirmed_amount} {confirmed_currency}",
    ),
    (
        "CALLBACK_ANOMALY",
        """
        SELECT channel, notify_id, payment_id, trade_state, outcome, detail
        FROM channel_callbacks
        WHERE outcome IN ('ILLEGAL_TRANSITION', 'AMOUNT_MISMATCH', 'MISSING_FIELD',
                          'MERCHANT_MISMATCH', 'PROTOCOL_MISMATCH')""",
        "{channel} callback {notify_id} for {payment_id} said {trade_state}: {outcome} ({detail})",
    ),
    *REFUND_CHECKS,
    (
        "NOTIFICATION_MISSING",
        """
        SELECT p.payment_id FROM payments p
        LEFT JOIN notifications n ON n.resource_id = p.payment_id
             AND n.event_type='payment.succeeded'
        WHERE p.status='SUCCESS' AND n.notify_id IS NULL AND p.paid_at < :cutoff""",
        "successful payment {payment_id} has no merchant notification",
    ),
)


def run_checks(conn: Connection, grace: timedelta) -> list[Violation]:
    cutoff = utcnow() - grace
    if conn.dialect.name == "sqlite":
        # SQLite stores naive UTC text; compare like with like.
        params: dict[str, object] = {"cutoff": cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")}
    else:
        params = {"cutoff": cutoff}
    violations: list[Violation] = []
    for code, sql, describe in CHECKS:
        for row in conn.execute(text(sql), params if ":cutoff" in sql else {}).mappings():
            violations.append(Violation(code, describe.format(**row)))
    return violations


def check_database(db: Database, grace: timedelta = timedelta(seconds=60)) -> list[Violation]:
    with db.read() as conn:
        return run_checks(conn, grace)
