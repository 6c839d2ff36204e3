"""Indexes for reading one business date: payments by paid_at (recon, the merchant bill),
refunds by created_at (recon). Without them a date's read scans every payment ever made.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 15:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_paid_at", "payments", ["paid_at"])
    op.create_index("ix_refunds_created_at", "refunds", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_refunds_created_at", table_name="refunds")
    op.drop_index("ix_payments_paid_at", table_name="payments")
