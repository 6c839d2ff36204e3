"""recon_runs, recon_locks, recon_cases, recon_case_steps: reconciliation runs with their
stored results, one run at a time per channel and date, and the 差错 cases with their history

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 11:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paygrid.storage.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger()
    op.create_table(
        "recon_runs",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("run_by", sa.String(length=64), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("matched_count", big, nullable=False),
        sa.Column("matched_amount", big, nullable=False),
        sa.Column("differences", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_recon_runs")),
    )
    op.create_index(
        "ix_recon_runs_channel_date", "recon_runs", ["channel", "business_date", "finished_at"]
    )
    op.create_table(
        "recon_locks",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "business_date", name=op.f("pk_recon_locks")),
    )
    op.create_table(
        "recon_cases",
        sa.Column("case_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amount", big, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("difference", sa.Text(), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_recon_cases")),
        sa.UniqueConstraint(
            "channel", "business_date", "kind", "reference", name="uq_recon_cases_difference"
        ),
    )
    op.create_index("ix_recon_cases_status", "recon_cases", ["status", "business_date"])
    op.create_table(
        "recon_case_steps",
        sa.Column("case_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("voucher_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["recon_cases.case_id"],
            name=op.f("fk_recon_case_steps_case_id_recon_cases"),
        ),
        sa.PrimaryKeyConstraint("case_id", "seq", name=op.f("pk_recon_case_steps")),
    )


def downgrade() -> None:
    op.drop_table("recon_case_steps")
    op.drop_index("ix_recon_cases_status", table_name="recon_cases")
    op.drop_table("recon_cases")
    op.drop_table("recon_locks")
    op.drop_index("ix_recon_runs_channel_date", table_name="recon_runs")
    op.drop_table("recon_runs")
