"""Prompt templates in SQL: immutable versions, movable labels, and a change log.

Every write (a version, a label set or removed) appends to `template_changes` in the same
transaction; replicas notice changes by polling its row count, which never goes down.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from gateway.storage.tables import metadata

template_versions = Table(
    "template_versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("description", Text, nullable=True),
    Column("model", String(256), nullable=True),
    Column("params", JSON, nullable=False),
    Column("variables", JSON, nullable=False),
    Column("messages", JSON, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("source", String(16), nullable=False),  # api | file
    Column("author_key_id", String(32), nullable=True),  # null for versions from prompts/
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("name", "version"),
)

template_labels = Table(
    "template_labels",
    metadata,
    Column("name", String(128), nullable=False),
    Column("label", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("canary_version", Integer, nullable=True),
    Column("canary_percent", Float, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    Column("updated_by", String(32), nullable=True),
    PrimaryKeyConstraint("name", "label"),
)

template_changes = Table(
    "template_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # version | label | unlabel
    Column("version", Integer, nullable=True),
    Column("label", String(64), nullable=True),
    Column("detail", JSON, nullable=True),
    Column("actor", String(32), nullable=True),
    Column("at", DateTime, nullable=False),
    Index("ix_template_changes_name_at", "name", "at"),
)
