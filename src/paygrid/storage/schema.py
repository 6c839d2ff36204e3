"""All tables, grouped by bounded context. Alembic migrations are generated from this metadata."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from paygrid.storage.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# --- merchants (商户) -------------------------------------------------------------------------
merchants = Table(
    "merchants",
    metadata,
    Column("mchid", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("fee_rate_ppm", Integer, nullable=False),
    Column("methods", String(256), nullable=False),  # comma-separated channels the merchant may use
    Column("created_at", UTCDateTime, nullable=False),
)

merchant_keys = Table(
    "merchant_keys",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("mchid", String(32), ForeignKey("merchants.mchid"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The secret, sealed under a key-encryption key (merchants/vault.py); never in plain text.
    Column("kek_id", String(40), nullable=False),
    Column("sealed_secret", String(255), nullable=False),  # base64(nonce || AES-GCM)
    Column("expires_at", UTCDateTime, nullable=True),  # set by a rotation: refused from then on
)

# --- api (merchant open API) ----------------------------------------------------------------
api_nonces = Table(
    "api_nonces",
    metadata,
    Column("mchid", String(32), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("mchid", String(32), primary_key=True),
    Column("idem_key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),  # NULL while the first request is in flight
    Column("response_body", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- payments (支付单) ------------------------------------------------------------------------
payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(40), primary_key=True),
    Column("mchid", String(32), ForeignKey("merchants.mchid"), nullable=False),
    Column("out_trade_no", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", String(256), nullable=False),
    Column("notify_url", String(512), nullable=False),
    Column("return_url", String(512), nullable=True),
    Column("method", String(16), nullable=False),  # as the merchant asked (cashier, native...)
    Column("status", String(16), nullable=False),
    Column("expire_at", UTCDateTime, nullable=False),
    Column("attach", String(512), nullable=True),
    Column("items", Text, nullable=True),  # JSON list as received, amounts in minor units
    Column("discounts", Text, nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    # Refunds PROCESSING: reserved, so refunded + refunding never exceeds amount (退款中).
    Column("refunding_amount", BigInteger, nullable=False, default=0, server_default="0"),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("cashier_token", String(64), nullable=False),
    Column("payer_bank", String(8), nullable=True),  # 付款银行 (kernel/banks.py): routing by bank
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # What the channel confirmed (callback or 补单) when SUCCESS was applied; checked by
    # `paygrid check` against amount/currency (CAPTURE_UNCONFIRMED).
    Column("confirmed_amount", BigInteger, nullable=True),
    Column("confirmed_currency", String(3), nullable=True),
    UniqueConstraint("mchid", "out_trade_no", name="uq_payments_mchid_out_trade_no"),
    Index("ix_payments_status_expire_at", "status", "expire_at"),
    Index("ix_payments_paid_at", "paid_at"),  # a business date's payments (recon, bills)
)

# A payment's attempts at the channels (渠道订单), one live at a time; see payments/orders.py.
channel_orders = Table(
    "channel_orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("payment_id", String(40), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("channel", String(32), nullable=False),
    Column("method", String(16), nullable=False),
    Column("channel_ref", String(64), nullable=False),  # our out_trade_no at the channel
    Column("status", String(16), nullable=False),
    Column("payer_action", Text, nullable=True),  # JSON, channels/ports.PayerAction
    Column("channel_trade_no", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Why routing chose this channel (JSON, routing/decide.RouteDecision): operators only.
    Column("route", Text, nullable=True),
    UniqueConstraint("channel", "channel_ref", name="uq_channel_orders_channel_ref"),
)

payment_transitions = Table(
    "payment_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(40), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("from_status", String(16), nullable=False),
    Column("to_status", String(16), nullable=False),
    Column("cause", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

# What each channel callback said and what became of it, deduplicated by (notify id, payment);
# refused 补单 answers too, once per payment and outcome (notify_id "recovery_query:OUTCOME").
channel_callbacks = Table(
    "channel_callbacks",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("notify_id", String(128), primary_key=True),
    Column("payment_id", String(40), primary_key=True, index=True),
    Column("trade_state", String(16), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("amount", BigInteger, nullable=True),  # the total the channel said, if any
    Column("currency", String(3), nullable=True),
    Column("detail", String(256), nullable=True),  # why it was refused
    Column("received_at", UTCDateTime, nullable=False),
)

# A payment's refunds (退款), each keyed to the channel order it refunds; see payments/refunds.py.
refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(40), primary_key=True),
    Column("payment_id", String(40), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("order_id", String(40), ForeignKey("channel_orders.order_id"), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("channel_ref", String(64), nullable=False),  # our refund number at the channel
    Column("mchid", String(32), nullable=False),
    Column("out_refund_no", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(80), nullable=True),
    Column("notify_url", String(512), nullable=True),
    Column("items", Text, nullable=True),  # JSON [{sku, quantity}], for per-SKU recon
    Column("request_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("channel_refund_no", String(64), nullable=True),
    Column("channel_state", String(32), nullable=True),  # the channel's own word (ABNORMAL...)
    Column("cause", String(64), nullable=True),  # what settled it: callback, answer, query...
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("succeeded_at", UTCDateTime, nullable=True),
    Column("failed_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    UniqueConstraint("mchid", "out_refund_no", name="uq_refunds_mchid_out_refund_no"),
    UniqueConstraint("channel", "channel_ref", name="uq_refunds_channel_ref"),
    Index("ix_refunds_status_updated_at", "status", "updated_at"),
    Index("ix_refunds_created_at", "created_at"),  # a business date's refunds (recon)
)

# What each refund callback said and what became of it, deduplicated by (notify id, refund) as
# channel_callbacks are for payments; refused refund 补单 answers too, once per outcome.
refund_callbacks = Table(
    "refund_callbacks",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("notify_id", String(128), primary_key=True),
    Column("refund_id", String(40), primary_key=True, index=True),
    Column("payment_id", String(40), nullable=False),
    Column("refund_state", String(16), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("amount", BigInteger, nullable=True),  # the amount the channel said, if any
    Column("currency", String(3), nullable=True),
    Column("detail", String(256), nullable=True),  # why it was refused
    Column("received_at", UTCDateTime, nullable=False),
)

# --- bus (outbox / inbox) -------------------------------------------------------------------
outbox = Table(
    "outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("dead", Boolean, nullable=False, default=False),
    Index("ix_outbox_unpublished", "published_at", "seq"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("event_id", String(40), primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
)

# --- ledger (账务) ----------------------------------------------------------------------------
ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("code", String(96), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # asset | liability | income | expense
    Column("currency", String(3), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# An account's running totals, split over shards (migration 0006): a posting adds its batch's
# totals to the one shard its transaction holds (repository.balance_shard), so concurrent
# postings never wait for each other's row locks; the balance is the sum over the shards, and
# `paygrid check` proves it from the entries.
ledger_balances = Table(
    "ledger_balances",
    metadata,
    Column("code", String(96), ForeignKey("ledger_accounts.code"), primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("debit_total", BigInteger, nullable=False),
    Column("credit_total", BigInteger, nullable=False),
)

ledger_vouchers = Table(
    "ledger_vouchers",
    metadata,
    Column("voucher_id", String(40), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("business_ref", String(64), nullable=False),
    Column("business_date", String(10), nullable=False),
    Column("memo", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The record this one belongs to: a refund voucher's payment (its capture's business_ref).
    Column("parent_ref", String(64), nullable=True, index=True),
    UniqueConstraint("kind", "business_ref", name="uq_ledger_vouchers_kind_business_ref"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "voucher_id",
        String(40),
        ForeignKey("ledger_vouchers.voucher_id"),
        nullable=False,
        index=True,
    ),
    Column(
        "account_code", String(96), ForeignKey("ledger_accounts.code"), nullable=False, index=True
    ),
    Column("direction", String(1), nullable=False),  # D | C
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
)

# --- notify (商户通知) -------------------------------------------------------------------------
notifications = Table(
    "notifications",
    metadata,
    Column("notify_id", String(40), primary_key=True),
    Column("event_id", String(40), nullable=False, unique=True),
    Column("mchid", String(32), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("resource_id", String(40), nullable=False, index=True),
    Column("url", String(512), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # PENDING | DELIVERED | FAILED
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("ix_notifications_due", "status", "next_attempt_at"),
)

notification_attempts = Table(
    "notification_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "notify_id", String(40), ForeignKey("notifications.notify_id"), nullable=False, index=True
    ),
    Column("attempt_no", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", String(512), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("manual", Boolean, nullable=False),
)

# --- reconciliation (对账) ----------------------------------------------------------------------
# Each bill (a channel's trade bill, the bank's statement) of a business date paygrid took in:
# its lines live normalised in a Parquet file under the data dir (``stored_path``), its totals
# here. One CURRENT bill per channel and date; a different file for them replaces it (the old
# row stays, REPLACED, with when and by which: the audit record).
recon_bills = Table(
    "recon_bills",
    metadata,
    Column("bill_id", String(40), primary_key=True),
    Column("channel", String(32), nullable=False),  # a channel of the registry, or "bank"
    Column("business_date", String(10), nullable=False),  # YYYY-MM-DD
    Column("source", String(8), nullable=False),  # fetch | import
    Column("file_name", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("lines", BigInteger, nullable=False),
    Column("payments", BigInteger, nullable=False),
    Column("payment_amount", BigInteger, nullable=False),
    Column("refunds", BigInteger, nullable=False),
    Column("refund_amount", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("stored_path", String(512), nullable=False),  # relative to the data dir
    Column("status", String(12), nullable=False),  # CURRENT | REPLACED
    Column("imported_at", UTCDateTime, nullable=False),
    Column("imported_by", String(64), nullable=False),
    Column("replaced_at", UTCDateTime, nullable=True),
    Column("replaced_by", String(40), nullable=True),
    Index("ix_recon_bills_channel_date", "channel", "business_date"),
    Index(
        "uq_recon_bills_current",
        "channel",
        "business_date",
        unique=True,
        sqlite_where=text("status = 'CURRENT'"),
        postgresql_where=text("status = 'CURRENT'"),
    ),
)

# A reconciliation run of one channel and business date, and its stored result (the JSON of
# `recon run --json` for the channel); one run at a time per channel and date (recon_locks).
recon_runs = Table(
    "recon_runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("channel", String(32), nullable=False),  # a channel of the registry, or "bank"
    Column("business_date", String(10), nullable=False),
    Column("run_by", String(64), nullable=False),  # a person, or the recon role's process
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("matched_count", BigInteger, nullable=False),
    Column("matched_amount", BigInteger, nullable=False),
    Column("differences", Integer, nullable=False),
    Column("held", Integer, nullable=False),
    Column("result", Text, nullable=False),
    Index("ix_recon_runs_channel_date", "channel", "business_date", "finished_at"),
)

# Who runs a channel's date now: taken by one run, held by its heartbeat, taken over when the
# lease ran out (a killed run).
recon_locks = Table(
    "recon_locks",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("business_date", String(10), primary_key=True),
    Column("holder", String(128), nullable=True),
    Column("lease_until", UTCDateTime, nullable=False),
)

# 差错 cases: one per unexplained difference (channel, date, kind, what it is about), and
# their append-only history (recon/cases.py has the state machine).
recon_cases = Table(
    "recon_cases",
    metadata,
    Column("case_id", String(40), primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("business_date", String(10), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("reference", String(160), nullable=False),
    Column("status", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed: what paygrid's books lack (+)
    Column("currency", String(3), nullable=False),
    Column("difference", Text, nullable=False),  # the difference as the run reported it (JSON)
    Column("opened_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint(
        "channel", "business_date", "kind", "reference", name="uq_recon_cases_difference"
    ),
    Index("ix_recon_cases_status", "status", "business_date"),
)
recon_case_steps = Table(
    "recon_case_steps",
    metadata,
    Column("case_id", String(40), ForeignKey("recon_cases.case_id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("voucher_id", String(40), nullable=True),
)


# --- agreements (协议 / 签约) ------------------------------------------------------------------
# A payer's bank account signed with an account-based channel; its details are never stored
# (agreements/domain.py): the bank, the masked account and the channel's agreement number.
agreements = Table(
    "agreements",
    metadata,
    Column("agreement_id", String(40), primary_key=True),
    Column("mchid", String(32), ForeignKey("merchants.mchid"), nullable=False),
    Column("out_agreement_no", String(64), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("bank", String(8), nullable=False),
    Column("masked_account", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("agreement_no", String(64), nullable=True),
    Column("message", String(256), nullable=False),
    Column("request_hash", String(64), nullable=False),  # repeat detection, not the details
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint("mchid", "out_agreement_no", name="uq_agreements_out_agreement_no"),
)

# --- routing (路由) ---------------------------------------------------------------------------
# Every routing configuration ever in force, append-only: a change is a new version, a
# rollback a new version with an older content. The newest is in force in every process.
routing_versions = Table(
    "routing_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("config", Text, nullable=False),  # canonical JSON (routing/config.RoutingConfig)
    Column("action", String(32), nullable=False),  # rules-apply | set-weight | rollback
    Column("actor", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
