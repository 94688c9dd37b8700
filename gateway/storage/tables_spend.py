"""Spend rollups: requests, tokens and cost per hour, key, team, model and template.

Rows are only ever inserted (each replica appends one row per group it saw since its last
flush, about once a second) and later compacted (the rows of a closed hour merged into one
per group by a DELETE ... RETURNING and an INSERT), so no request ever UPDATEs a shared
counter row and replicas never contend on one. `/admin/spend` and the budget load at start
sum them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table

from gateway.storage.tables import metadata

spend_rollups = Table(
    "spend_rollups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("bucket", DateTime, nullable=False),  # the UTC hour the requests were received in
    Column("key_id", String(32), nullable=True),
    Column("team", String(128), nullable=True),
    Column("model", String(256), nullable=True),  # the public model that served (or asked)
    Column("template", String(128), nullable=True),
    Column("requests", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Index("ix_spend_rollups_bucket", "bucket"),
    Index("ix_spend_rollups_key_id_bucket", "key_id", "bucket"),
    Index("ix_spend_rollups_team_bucket", "team", "bucket"),
)
