"""recon_bills: the bills (channel trade bills, bank statements) recon took in, one CURRENT per
channel and business date, replaced ones kept as the audit record

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paygrid.storage.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger()
    op.create_table(
        "recon_bills",
        sa.Column("bill_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", big, nullable=False),
        sa.Column("lines", big, nullable=False),
        sa.Column("payments", big, nullable=False),
        sa.Column("payment_amount", big, nullable=False),
        sa.Column("refunds", big, nullable=False),
        sa.Column("refund_amount", big, nullable=False),
        sa.Column("fee", big, nullable=False),
        sa.Column("stored_path", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("imported_at", UTCDateTime(), nullable=False),
        sa.Column("imported_by", sa.String(length=64), nullable=False),
        sa.Column("replaced_at", UTCDateTime(), nullable=True),
        sa.Column("replaced_by", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("bill_id", name=op.f("pk_recon_bills")),
    )
    op.create_index("ix_recon_bills_channel_date", "recon_bills", ["channel", "business_date"])
    op.create_index(
        "uq_recon_bills_current",
        "recon_bills",
        ["channel", "business_date"],
        unique=True,
        sqlite_where=sa.text("status = 'CURRENT'"),
        postgresql_where=sa.text("status = 'CURRENT'"),
    )


def downgrade() -> None:
    op.drop_index("uq_recon_bills_current", table_name="recon_bills")
    op.drop_index("ix_recon_bills_channel_date", table_name="recon_bills")
    op.drop_table("recon_bills")
