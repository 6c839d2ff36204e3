"""channel orders (attempts) as their own table; events in the outbox as whole envelopes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00

A payment's channel order used to live inline on ``payments`` (channel, code_url,
channel_trade_no). Each becomes a row of ``channel_orders``; its id is the payment id's body
under the ``cho`` prefix, so the upgrade is repeatable. Unpublished outbox rows are rewritten
as the one envelope the relay and NATS share (bus/codec.py).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

import paygrid.storage.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_UTC = paygrid.storage.types.UTCDateTime()
_payments = sa.table(
    "payments",
    *(sa.column(c) for c in ("payment_id", "channel", "method", "status", "code_url")),
    sa.column("channel_trade_no"),
    sa.column("created_at", _UTC),
    sa.column("updated_at", _UTC),
)
_outbox = sa.table(
    "outbox",
    *(sa.column(c) for c in ("seq", "event_id", "event_type", "aggregate_id", "payload")),
    sa.column("published_at", _UTC),
    sa.column("created_at", _UTC),
)
ORDER_STATUS = {  # payment status -> its order's status
    "CREATED": "REQUESTED",
    "SUCCESS": "PAID",
    "CLOSED": "CLOSED",
    "FAILED": "FAILED",
}


def upgrade() -> None:
    op.create_table(
        "channel_orders",
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("channel_ref", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payer_action", sa.Text(), nullable=True),
        sa.Column("channel_trade_no", sa.String(length=64), nullable=True),
        sa.Column("created_at", paygrid.storage.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", paygrid.storage.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.payment_id"],
            name=op.f("fk_channel_orders_payment_id_payments"),
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_channel_orders")),
        sa.UniqueConstraint("channel", "channel_ref", name="uq_channel_orders_channel_ref"),
    )
    op.create_index(
        op.f("ix_channel_orders_payment_id"), "channel_orders", ["payment_id"], unique=False
    )
    _move_orders()
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("channel")
        batch.drop_column("code_url")
        batch.drop_column("channel_trade_no")
    _rewrite_outbox()


def _move_orders() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_payments).where(_payments.c.channel.is_not(None))).all()
    orders = sa.table(
        "channel_orders",
        *(sa.column(c) for c in ("order_id", "payment_id", "channel", "method", "channel_ref")),
        *(sa.column(c) for c in ("status", "payer_action", "channel_trade_no")),
        sa.column("created_at", _UTC),
        sa.column("updated_at", _UTC),
    )
    for r in rows:
        status = ORDER_STATUS.get(r.status) or ("OPEN" if r.code_url else "REQUESTED")
        action = json.dumps({"kind": "qr_code", "content": r.code_url}) if r.code_url else None
        conn.execute(
            orders.insert().values(
                order_id="cho_" + r.payment_id.split("_", 1)[1],
                payment_id=r.payment_id,
                channel=r.channel,
                method=r.method if r.method != "cashier" else "native",
                channel_ref=r.payment_id,
                status=status,
                payer_action=action,
                channel_trade_no=r.channel_trade_no,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
        )


def _rewrite_outbox() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_outbox).where(_outbox.c.published_at.is_(None))).all()
    for r in rows:
        old: dict[str, Any] = json.loads(r.payload)
        if "event_id" in old:
            continue
        envelope = {
            "event_id": r.event_id,
            "event_type": r.event_type,
            "aggregate_id": r.aggregate_id,
            "occurred_at": r.created_at.isoformat(),
            "version": old.get("version", 1),
            "request_id": old.get("request_id"),
            "data": old.get("data"),
        }
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        conn.execute(_outbox.update().where(_outbox.c.seq == r.seq).values(payload=body))


def downgrade() -> None:
    raise RuntimeError("0004 is not reversible: restore a backup taken before the upgrade")
