"""channel callbacks deduplicated by (notify id, payment) and what they said; the amount the
channel confirmed on a payment

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:00:00.000000

Payments that succeeded before this revision have no confirmed amount on record: `paygrid
check` reports them as CAPTURE_UNCONFIRMED (see docs/operations.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channel_callbacks", schema=None) as batch_op:
        batch_op.drop_constraint("pk_channel_callbacks", type_="primary")
        batch_op.create_primary_key("pk_channel_callbacks", ["channel", "notify_id", "payment_id"])
        batch_op.add_column(sa.Column("amount", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("detail", sa.String(length=256), nullable=True))
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_amount", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_currency", sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("confirmed_currency")
        batch_op.drop_column("confirmed_amount")
    with op.batch_alter_table("channel_callbacks", schema=None) as batch_op:
        batch_op.drop_column("detail")
        batch_op.drop_column("currency")
        batch_op.drop_column("amount")
        batch_op.drop_constraint("pk_channel_callbacks", type_="primary")
        batch_op.create_primary_key("pk_channel_callbacks", ["channel", "notify_id"])
