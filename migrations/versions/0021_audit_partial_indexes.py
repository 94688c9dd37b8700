"""audit: partial indexes for the filter columns most events leave NULL (issue 21)

An event pays for every index it is in. End user, template, error code, the admin-change
columns and the Claude Code session are NULL on most events, so their (column, id) indexes become partial (`WHERE column
IS NOT NULL`): a filter `column = ?` still uses them (equality implies NOT NULL, in SQLite and
PostgreSQL), and a plain request event skips eight of the table's index inserts.

Revision ID: 0021_audit_partial_indexes
Revises: 0007_admin_changes, 0005_session_id
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = '0021_audit_partial_indexes'
down_revision = ('0007_admin_changes', '0005_session_id')
branch_labels = None
depends_on = None

_COLUMNS = {
    'ix_audit_events_user_id': 'user',
    'ix_audit_events_template_name_id': 'template_name',
    'ix_audit_events_error_code_id': 'error_code',
    'ix_audit_events_action_id': 'action',
    'ix_audit_events_actor_key_id_id': 'actor_key_id',
    'ix_audit_events_target_type_id': 'target_type',
    'ix_audit_events_target_id_id': 'target_id',
    'ix_audit_events_session_id_id': 'session_id',
}


def upgrade() -> None:
    for name, column in _COLUMNS.items():
        where = sa.text(f'"{column}" IS NOT NULL')
        op.drop_index(name, table_name='audit_events')
        op.create_index(name, 'audit_events', [column, 'id'], unique=False,
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in _COLUMNS.items():
        op.drop_index(name, table_name='audit_events')
        op.create_index(name, 'audit_events', [column, 'id'], unique=False)
