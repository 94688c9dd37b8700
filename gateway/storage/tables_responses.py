"""Stored responses of `/v1/responses` (`store: true`), each owned by the key that made it.

`root_id` is the first response of a chain (its own id for a first turn), so a chain is read
with one query and walked in memory. `input_items` are the request's own items (not the
template's, not the replayed ones) and `response` the response object, both as JSON text as
they went upstream and came back: PII redacted as the policy says, placeholders not restored.
`upstream_id` is the id a native upstream holds the response under (a chain on it is pinned
to `deployment`).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, String, Table, Text

from gateway.storage.tables import metadata

responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_key_id", String(32), nullable=False),
    Column("team", String(128), nullable=True),
    Column("root_id", String(64), nullable=False),
    Column("previous_id", String(64), nullable=True),
    Column("model", String(256), nullable=False),
    Column("deployment", String(256), nullable=True),
    Column("upstream_id", String(256), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("response", Text, nullable=False),
    Index("ix_responses_root_id", "root_id"),
    Index("ix_responses_expires_at", "expires_at"),
)
