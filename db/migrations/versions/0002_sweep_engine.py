"""Sweep engine: a run's group and cell keys, its owning Optuna trial, worker and heartbeat.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:55:00

Only adds nullable columns and an index: rows written under 0001 stay as they are (their new
columns are NULL). Optuna's own tables, which share the database, are not touched here.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_key', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('cell_key', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('trial_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('worker', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_runs_sweep_status', ['sweep_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_sweep_status')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('started_at')
        batch_op.drop_column('worker')
        batch_op.drop_column('trial_id')
        batch_op.drop_column('cell_key')
        batch_op.drop_column('group_key')
