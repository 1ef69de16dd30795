"""machine states carry the energy of the state that ended

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("machine_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_since_ns", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("previous_energy_wh", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("previous_energy_from_ns", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("machine_states", schema=None) as batch_op:
        batch_op.drop_column("previous_energy_from_ns")
        batch_op.drop_column("previous_energy_wh")
        batch_op.drop_column("previous_since_ns")
