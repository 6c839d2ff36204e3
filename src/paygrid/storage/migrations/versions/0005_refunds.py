"""refunds (退款): the refunds table, refund callbacks, the amount reserved by refunds in flight,
and the payment a refund voucher belongs to

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:00:00

``payments.refunding_amount`` is what refunds PROCESSING hold back (0 for every existing
payment: no refund existed before this revision). ``ledger_vouchers.parent_ref`` names the
payment of a refund voucher, so the ledger finds a payment's earlier refunds to return its fee
pro rata.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import paygrid.storage.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _utc(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, paygrid.storage.types.UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refunding_amount", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("ledger_vouchers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_ref", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_ledger_vouchers_parent_ref"), ["parent_ref"])
    _create_refunds()
    _create_refund_callbacks()


def _create_refunds() -> None:
    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("channel_ref", sa.String(length=64), nullable=False),
        sa.Column("mchid", sa.String(length=32), nullable=False),
        sa.Column("out_refund_no", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=80), nullable=True),
        sa.Column("notify_url", sa.String(length=512), nullable=True),
        sa.Column("items", sa.Text(), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel_refund_no", sa.String(length=64), nullable=True),
        sa.Column("channel_state", sa.String(length=32), nullable=True),
        sa.Column("cause", sa.String(length=64), nullable=True),
        _utc("created_at", False),
        _utc("updated_at", False),
        _utc("succeeded_at", True),
        _utc("failed_at", True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.payment_id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["channel_orders.order_id"],
            name=op.f("fk_refunds_order_id_channel_orders"),
        ),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("mchid", "out_refund_no", name="uq_refunds_mchid_out_refund_no"),
        sa.UniqueConstraint("channel", "channel_ref", name="uq_refunds_channel_ref"),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"])
    op.create_index("ix_refunds_status_updated_at", "refunds", ["status", "updated_at"])


def _create_refund_callbacks() -> None:
    op.create_table(
        "refund_callbacks",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("notify_id", sa.String(length=128), nullable=False),
        sa.Column("refund_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("refund_state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("detail", sa.String(length=256), nullable=True),
        _utc("received_at", False),
        sa.PrimaryKeyConstraint(
            "channel", "notify_id", "refund_id", name=op.f("pk_refund_callbacks")
        ),
    )
    op.create_index(op.f("ix_refund_callbacks_refund_id"), "refund_callbacks", ["refund_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_refund_callbacks_refund_id"), table_name="refund_callbacks")
    op.drop_table("refund_callbacks")
    op.drop_index("ix_refunds_status_updated_at", table_name="refunds")
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_table("refunds")
    with op.batch_alter_table("ledger_vouchers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_vouchers_parent_ref"))
        batch_op.drop_column("parent_ref")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("refunding_amount")
