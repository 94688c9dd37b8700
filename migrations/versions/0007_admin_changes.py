"""audit: admin changes (action, actor, target, before/after), with their filter indexes

Revision ID: 0007_admin_changes
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_admin_changes'
down_revision = '0003'
branch_labels = None
depends_on = None

_COLUMNS = [('action', sa.String(length=64)), ('actor_key_id', sa.String(length=32)),
            ('target_type', sa.String(length=32)), ('target_id', sa.String(length=128)),
            ('target_name', sa.String(length=256)), ('before', sa.JSON()),
            ('after', sa.JSON())]
_INDEXES = [
    ('ix_audit_events_action_id', ['action', 'id']),
    ('ix_audit_events_actor_key_id_id', ['actor_key_id', 'id']),
    ('ix_audit_events_target_type_id', ['target_type', 'id']),
    ('ix_audit_events_target_id_id', ['target_id', 'id']),
]


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        for name, kind in _COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
        for name, columns in _INDEXES:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        for name, _ in _INDEXES:
            batch_op.drop_index(name)
        for name, _ in reversed(_COLUMNS):
            batch_op.drop_column(name)
