"""merchant secrets sealed under a key-encryption key; key expiry for rotation

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02 09:00:00

Rows written before this revision hold the secret in plain text. They are sealed here, in the
migration's transaction, with the sealer paygrid hands over in ``config.attributes
["seal_secret"]`` (``Database.migrate(seal_secret=…)``, built from the configured KEK).
Without it, and with plaintext rows present, the migration refuses: it never invents a KEK and
never leaves a secret in plain text. An empty table needs no KEK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

import paygrid.storage.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_keys = sa.table(
    "merchant_keys",
    sa.column("key_id", sa.String),
    sa.column("mchid", sa.String),
    sa.column("secret", sa.String),
    sa.column("kek_id", sa.String),
    sa.column("sealed_secret", sa.String),
)


def _attributes() -> dict[str, Any]:
    config = op.get_context().config
    return config.attributes if config is not None else {}


def upgrade() -> None:
    with op.batch_alter_table("merchant_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kek_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("sealed_secret", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("expires_at", paygrid.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
    bind = op.get_bind()
    rows = bind.execute(sa.select(_keys.c.key_id, _keys.c.mchid, _keys.c.secret)).all()
    if rows:
        seal: Callable[[str, str, str], tuple[str, str]] | None = _attributes().get("seal_secret")
        if seal is None:
            raise RuntimeError(
                f"merchant_keys holds {len(rows)} secret(s) in plain text: run `paygrid migrate` "
                "(or start paygrid) with the key-encryption key configured so they are sealed"
            )
        for row in rows:
            kek_id, blob = seal(row.mchid, row.key_id, row.secret)
            bind.execute(
                _keys.update()
                .where(_keys.c.key_id == row.key_id)
                .values(kek_id=kek_id, sealed_secret=blob)
            )
        _attributes()["sealed_plaintext_rows"] = len(rows)
    with op.batch_alter_table("merchant_keys", schema=None) as batch_op:
        batch_op.alter_column("kek_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.alter_column("sealed_secret", existing_type=sa.String(length=255), nullable=False)
        batch_op.drop_column("secret")


def downgrade() -> None:
    raise RuntimeError(
        "0003 is not reversible: going back would write merchant secrets in plain text; "
        "restore a backup taken before the upgrade instead"
    )
