"""Runs record the warmup-stable-decay trunk they branched off.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 12:00:00

- ``runs.trunk_key``: in a branched sweep (``schedule.branches``), the trunk cell
  (``N{n_params}-B{batch}-trunk``) whose stable phase the run shares with the other token
  budgets of its (lr, seed) before its own cooldown; the run's trunk is (trunk_key, lr, seed).
  NULL for every run trained on its own, which is every run stored before this revision.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trunk_key', sa.String(length=160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('trunk_key')
