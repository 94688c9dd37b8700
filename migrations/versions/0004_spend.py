"""spend rollups

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('spend_rollups',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('bucket', sa.DateTime(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=True),
    sa.Column('team', sa.String(length=128), nullable=True),
    sa.Column('model', sa.String(length=256), nullable=True),
    sa.Column('template', sa.String(length=128), nullable=True),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_nanos', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spend_rollups'))
    )
    with op.batch_alter_table('spend_rollups', schema=None) as batch_op:
        batch_op.create_index('ix_spend_rollups_bucket', ['bucket'], unique=False)
        batch_op.create_index('ix_spend_rollups_key_id_bucket', ['key_id', 'bucket'], unique=False)
        batch_op.create_index('ix_spend_rollups_team_bucket', ['team', 'bucket'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('spend_rollups', schema=None) as batch_op:
        batch_op.drop_index('ix_spend_rollups_team_bucket')
        batch_op.drop_index('ix_spend_rollups_key_id_bucket')
        batch_op.drop_index('ix_spend_rollups_bucket')

    op.drop_table('spend_rollups')
