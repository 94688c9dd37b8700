"""The schema, as SQLAlchemy Core tables. Alembic migrations in `migrations/` must match it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

teams = Table(
    "teams",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("models", JSON, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrent", Integer, nullable=True),
    Column("budget_nanos", BigInteger, nullable=True),
    Column("budget_period", String(8), nullable=False, default="month"),
    Column("policy", String(128), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),
    Column("team", String(128), ForeignKey("teams.name"), nullable=True, index=True),
    Column("role", String(16), nullable=False),
    Column("models", JSON, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrent", Integer, nullable=True),
    Column("budget_nanos", BigInteger, nullable=True),
    Column("budget_period", String(8), nullable=False, default="month"),
    Column("expires_at", DateTime, nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
)

def _not_null_index(name: str, column: str) -> Index:
    """(column, id), only over the rows where `column` is set."""
    where = text(f'"{column}" IS NOT NULL')
    return Index(name, column, "id", sqlite_where=where, postgresql_where=where)


audit_events = Table(
    "audit_events",
    metadata,
    Column("id", String(32), primary_key=True),  # time-ordered: sorting by id = newest first
    Column("request_id", String(128), nullable=False, index=True),
    Column("received_at", DateTime, nullable=False, index=True),
    Column("first_byte_at", DateTime, nullable=True),
    Column("completed_at", DateTime, nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("key_name", String(128), nullable=True),
    Column("team", String(128), nullable=True),
    Column("user", String(256), nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("model_requested", String(256), nullable=True),
    Column("model_served", String(256), nullable=True),
    Column("deployment", String(256), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("fallback_used", Boolean, nullable=False, default=False),
    Column("template_name", String(128), nullable=True),
    Column("template_version", Integer, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("total_tokens", Integer, nullable=True),
    Column("cost_nanos", BigInteger, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("status_code", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("pii", JSON, nullable=True),
    Column("stream", Boolean, nullable=False, default=False),
    Column("cancelled", Boolean, nullable=False, default=False),
    Column("partial", Boolean, nullable=False, default=False),
    Column("usage_source", String(16), nullable=True),
    Column("cost_estimated", Boolean, nullable=False, default=False),
    # The hash chain: each replica (one local spool) numbers its events 1, 2, 3, ... in `seq`;
    # `hash` covers the canonical encoding of the row (and its bodies) and `prev_hash`.
    Column("replica", String(64), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    # Admin changes (migration 0007): what was changed, by whom, and its values before and
    # after (secrets only as fingerprints). Added after the chain's first rows: hashed only
    # when set, so the rows written before them verify as they were (`audit/chain.py`).
    Column("action", String(64), nullable=True),  # key.create, template.label.set, ...
    Column("actor_key_id", String(32), nullable=True),
    Column("target_type", String(32), nullable=True),  # key, team, template, policy, audit
    Column("target_id", String(128), nullable=True),
    Column("target_name", String(256), nullable=True),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    # Added after the chain's first rows (migration 0005_session_id): hashed only when set,
    # so the rows written before it verify as they were (`audit/chain.py`, `LATE_COLUMNS`).
    Column("session_id", String(128), nullable=True),  # the client's X-Claude-Code-Session-Id
    # The response cache (migration 0008): HIT | MISS | BYPASS | REFRESH on routes with the
    # cache on; a hit's source request and what it saved. Hashed only when set, as above.
    Column("cache_status", String(16), nullable=True),
    Column("cache_source_request_id", String(128), nullable=True),
    Column("saved_cost_nanos", BigInteger, nullable=True),
    # One index per audit filter, ending in `id` so "filter, newest first, LIMIT n" is a range
    # scan; the chain index serves verify and purge.
    # Columns that most events leave NULL (no end user, no template, no error, not an admin
    # change, no Claude Code session) have partial indexes (`WHERE col IS NOT NULL`,
    # migration 0021): a filter `col = ?` still uses them, and an event pays only for the
    # indexes of its values.
    Index("ix_audit_events_key_id_id", "key_id", "id"),
    Index("ix_audit_events_team_id", "team", "id"),
    _not_null_index("ix_audit_events_user_id", "user"),
    Index("ix_audit_events_model_requested_id", "model_requested", "id"),
    Index("ix_audit_events_model_served_id", "model_served", "id"),
    Index("ix_audit_events_deployment_id", "deployment", "id"),
    _not_null_index("ix_audit_events_template_name_id", "template_name"),
    Index("ix_audit_events_status_code_id", "status_code", "id"),
    _not_null_index("ix_audit_events_error_code_id", "error_code"),
    Index("ix_audit_events_replica_seq", "replica", "seq"),
    _not_null_index("ix_audit_events_action_id", "action"),
    _not_null_index("ix_audit_events_actor_key_id_id", "actor_key_id"),
    _not_null_index("ix_audit_events_target_type_id", "target_type"),
    _not_null_index("ix_audit_events_target_id_id", "target_id"),
    _not_null_index("ix_audit_events_session_id_id", "session_id"),
    Index("ix_audit_events_cache_status_id", "cache_status", "id"),
)

audit_bodies = Table(
    "audit_bodies",
    metadata,
    Column("event_id", String(32), ForeignKey("audit_events.id", ondelete="CASCADE"),
           primary_key=True),
    Column("request_body", Text, nullable=True),
    Column("response_body", Text, nullable=True),
)

# The PII kinds found in an event, one row per kind: the `pii_kind` filter reads this index
# instead of parsing every event's `pii` JSON. Derived data: not part of the hash chain.
audit_pii = Table(
    "audit_pii",
    metadata,
    Column("event_id", String(32), ForeignKey("audit_events.id", ondelete="CASCADE"),
           primary_key=True),
    Column("kind", String(32), primary_key=True),
    Index("ix_audit_pii_kind_event_id", "kind", "event_id"),
)

# Written by `gateway audit purge`: where each replica's chain now starts (the last purged
# event's seq and hash), so the rest of the chain stays verifiable. `mac` is an HMAC over the
# row when an audit HMAC key is configured.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("replica", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("events_purged", BigInteger, nullable=False),
    Column("cutoff", DateTime, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("mac", String(64), nullable=True),
    Index("ix_audit_checkpoints_replica_seq", "replica", "seq"),
)
