"""Runs and laws name their optimizer; runs of mixture-of-experts models carry total parameters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:00:00

- ``runs.optimizer``: the optimizer a run trained with ("adamw", "lion", ...). Every run stored
  before this revision trained with AdamW (the only optimizer the sweep engine had), so existing
  rows read "adamw". A group of runs, and a law, is one optimizer's.
- ``runs.n_params_total``: total parameters of a mixture-of-experts model (NULL for a dense
  model, whose total is ``n_params``). ``n_params`` stays the count the laws use: the active
  non-embedding parameters, as Step Law's MoE fits do.
- ``laws.optimizer``: the optimizer a law was fitted on (published presets: AdamW's); a law is
  only used for its own optimizer.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('optimizer', sa.String(length=40), nullable=False, server_default='adamw'))
        batch_op.add_column(sa.Column('n_params_total', sa.Float(), nullable=True))
    with op.batch_alter_table('laws', schema=None) as batch_op:
        batch_op.add_column(sa.Column('optimizer', sa.String(length=40), nullable=False, server_default='adamw'))


def downgrade() -> None:
    with op.batch_alter_table('laws', schema=None) as batch_op:
        batch_op.drop_column('optimizer')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('n_params_total')
        batch_op.drop_column('optimizer')
