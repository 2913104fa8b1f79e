"""Sweeps: drop the stored ``status`` column; a sweep's state is derived from its runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:00:00

Nothing ever updated the column after "planned" was written at creation, so finished sweeps
read "planned" forever. ``sweeps.status.sweep_state`` now computes the state from the runs'
counts, which cannot drift. Downgrading adds the column back with "planned" in every row (what
0002 held for every sweep written by the engine).
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_column('status')


def downgrade() -> None:
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=20), nullable=False, server_default='planned'))
