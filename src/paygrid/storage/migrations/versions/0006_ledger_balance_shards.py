"""ledger balances in shards: an account's running totals move from ledger_accounts to
ledger_balances (code, shard), so concurrent postings never share a row lock

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:30:00

Every existing account's totals are carried over as its shard 0, so a database upgrades with
the balances it had; `paygrid check` proves them from the entries as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_balances",
        sa.Column("code", sa.String(length=96), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("debit_total", sa.BigInteger(), nullable=False),
        sa.Column("credit_total", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["code"], ["ledger_accounts.code"], name=op.f("fk_ledger_balances_code_ledger_accounts")
        ),
        sa.PrimaryKeyConstraint("code", "shard", name=op.f("pk_ledger_balances")),
    )
    op.execute(
        "INSERT INTO ledger_balances (code, shard, debit_total, credit_total) "
        "SELECT code, 0, debit_total, credit_total FROM ledger_accounts"
    )
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35, PostgreSQL): a batch rebuild of the
    # table would drop it, which the entries' foreign key forbids.
    op.execute("ALTER TABLE ledger_accounts DROP COLUMN debit_total")
    op.execute("ALTER TABLE ledger_accounts DROP COLUMN credit_total")


def downgrade() -> None:
    for column in ("debit_total", "credit_total"):
        op.execute(f"ALTER TABLE ledger_accounts ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0")
    op.execute(
        "UPDATE ledger_accounts SET "
        "debit_total = (SELECT COALESCE(SUM(b.debit_total), 0) FROM ledger_balances b "
        "WHERE b.code = ledger_accounts.code), "
        "credit_total = (SELECT COALESCE(SUM(b.credit_total), 0) FROM ledger_balances b "
        "WHERE b.code = ledger_accounts.code)"
    )
    op.drop_table("ledger_balances")
