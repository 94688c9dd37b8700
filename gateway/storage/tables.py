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

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("received_at", DateTime, nullable=False, index=True),
    Column("first_byte_at", DateTime, nullable=True),
    Column("completed_at", DateTime, nullable=True),
    Column("key_id", String(32), nullable=True, index=True),
    Column("key_name", String(128), nullable=True),
    Column("team", String(128), nullable=True, index=True),
    Column("user", String(256), nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("model_requested", String(256), nullable=True, index=True),
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
    Column("status_code", Integer, nullable=False, index=True),
    Column("error_code", String(64), nullable=True),
    Column("pii", JSON, nullable=True),
    Column("stream", Boolean, nullable=False, default=False),
    Column("cancelled", Boolean, nullable=False, default=False),
    Column("partial", Boolean, nullable=False, default=False),
    Column("usage_source", String(16), nullable=True),
    Column("cost_estimated", Boolean, nullable=False, default=False),
    Column("replica", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_events_team_received_at", "team", "received_at"),
)

audit_bodies = Table(
    "audit_bodies",
    metadata,
    Column("event_id", String(32), ForeignKey("audit_events.id", ondelete="CASCADE"),
           primary_key=True),
    Column("request_body", Text, nullable=True),
    Column("response_body", Text, nullable=True),
)
