"""audit: the client's session (`X-Claude-Code-Session-Id`), with its filter index

Revision ID: 0005_session_id
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_session_id'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_audit_events_session_id_id', ['session_id', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_session_id_id')
        batch_op.drop_column('session_id')
