"""audit: response cache columns (cache_status, cache_source_request_id, saved_cost_nanos)

Revision ID: 0008_audit_cache
Revises: 0007_admin_changes
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = '0008_audit_cache'
down_revision = '0007_admin_changes'
branch_labels = None
depends_on = None

_COLUMNS = [('cache_status', sa.String(length=16)),
            ('cache_source_request_id', sa.String(length=128)),
            ('saved_cost_nanos', sa.BigInteger())]


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        for name, kind in _COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
        batch_op.create_index('ix_audit_events_cache_status_id', ['cache_status', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_cache_status_id')
        for name, _ in reversed(_COLUMNS):
            batch_op.drop_column(name)
