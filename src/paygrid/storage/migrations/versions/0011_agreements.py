"""Agreements (协议): a payer's bank account signed with an account-based channel.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 21:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paygrid.storage.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreements",
        sa.Column("agreement_id", sa.String(length=40), nullable=False),
        sa.Column("mchid", sa.String(length=32), nullable=False),
        sa.Column("out_agreement_no", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("bank", sa.String(length=8), nullable=False),
        sa.Column("masked_account", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agreement_no", sa.String(length=64), nullable=True),
        sa.Column("message", sa.String(length=256), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mchid"], ["merchants.mchid"], name=op.f("fk_agreements_mchid_merchants")
        ),
        sa.PrimaryKeyConstraint("agreement_id", name=op.f("pk_agreements")),
        sa.UniqueConstraint("mchid", "out_agreement_no", name="uq_agreements_out_agreement_no"),
    )


def downgrade() -> None:
    op.drop_table("agreements")
