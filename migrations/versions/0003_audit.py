"""audit trail: hash chain sequence, one index per filter, PII kinds, purge checkpoints

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-27
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None

_FILTER_INDEXES = [
    ('ix_audit_events_key_id_id', ['key_id', 'id']),
    ('ix_audit_events_team_id', ['team', 'id']),
    ('ix_audit_events_user_id', ['user', 'id']),
    ('ix_audit_events_model_requested_id', ['model_requested', 'id']),
    ('ix_audit_events_model_served_id', ['model_served', 'id']),
    ('ix_audit_events_deployment_id', ['deployment', 'id']),
    ('ix_audit_events_template_name_id', ['template_name', 'id']),
    ('ix_audit_events_status_code_id', ['status_code', 'id']),
    ('ix_audit_events_error_code_id', ['error_code', 'id']),
    ('ix_audit_events_replica_seq', ['replica', 'seq']),
]
_OLD_INDEXES = [
    ('ix_audit_events_key_id', ['key_id']),
    ('ix_audit_events_model_requested', ['model_requested']),
    ('ix_audit_events_status_code', ['status_code']),
    ('ix_audit_events_team', ['team']),
    ('ix_audit_events_team_received_at', ['team', 'received_at']),
]


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        for name, _ in _OLD_INDEXES:
            batch_op.drop_index(name)
        for name, columns in _FILTER_INDEXES:
            batch_op.create_index(name, columns, unique=False)

    op.create_table('audit_pii',
    sa.Column('event_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['audit_events.id'], name=op.f('fk_audit_pii_event_id_audit_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', 'kind', name=op.f('pk_audit_pii'))
    )
    with op.batch_alter_table('audit_pii', schema=None) as batch_op:
        batch_op.create_index('ix_audit_pii_kind_event_id', ['kind', 'event_id'], unique=False)

    op.create_table('audit_checkpoints',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('replica', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('events_purged', sa.BigInteger(), nullable=False),
    sa.Column('cutoff', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('mac', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints'))
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index('ix_audit_checkpoints_replica_seq', ['replica', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_checkpoints_replica_seq')
    op.drop_table('audit_checkpoints')
    with op.batch_alter_table('audit_pii', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_pii_kind_event_id')
    op.drop_table('audit_pii')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        for name, _ in _FILTER_INDEXES:
            batch_op.drop_index(name)
        for name, columns in _OLD_INDEXES:
            batch_op.create_index(name, columns, unique=False)
        batch_op.drop_column('seq')
