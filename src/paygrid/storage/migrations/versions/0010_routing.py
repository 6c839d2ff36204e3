"""Routing: every configuration version (append-only, audited), the routing decision on each
channel order, and the payer's bank on the payment (what a cut-over is by).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 21:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paygrid.storage.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routing_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_routing_versions")),
    )
    with op.batch_alter_table("channel_orders") as batch:
        batch.add_column(sa.Column("route", sa.Text(), nullable=True))
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("payer_bank", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("payer_bank")
    with op.batch_alter_table("channel_orders") as batch:
        batch.drop_column("route")
    op.drop_table("routing_versions")
