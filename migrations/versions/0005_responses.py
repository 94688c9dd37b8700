"""stored responses of /v1/responses

Revision ID: 0005_responses
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_responses'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('responses',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('owner_key_id', sa.String(length=32), nullable=False),
    sa.Column('team', sa.String(length=128), nullable=True),
    sa.Column('root_id', sa.String(length=64), nullable=False),
    sa.Column('previous_id', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('deployment', sa.String(length=256), nullable=True),
    sa.Column('upstream_id', sa.String(length=256), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('input_items', sa.Text(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_responses'))
    )
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.create_index('ix_responses_expires_at', ['expires_at'], unique=False)
        batch_op.create_index('ix_responses_root_id', ['root_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_index('ix_responses_root_id')
        batch_op.drop_index('ix_responses_expires_at')

    op.drop_table('responses')
