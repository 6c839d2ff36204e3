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
        "BALANCE_MISMATCH",
        """
        SELECT a.code, a.debit_total, a.credit_total,
               COALESCE(SUM(CASE WHEN e.direction='D' THEN e.amount END), 0) AS d,
               COALESCE(SUM(CASE WHEN e.direction='C' THEN e.amount END), 0) AS c
        FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_code = a.code
        GROUP BY a.code, a.debit_total, a.credit_total
        HAVING a.debit_total <> COALESCE(SUM(CASE WHEN e.direction='D' THEN e.amount END), 0)
            OR a.credit_total <> COALESCE(SUM(CASE WHEN e.direction='C' THEN e.amount END), 0)""",
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
        SELECT payment_id, amount, refunded_amount FROM payments
        WHERE refunded_amount > amount OR refunded_amount < 0""",
        "payment {payment_id} of {amount} has refunded {refunded_amount}",
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
