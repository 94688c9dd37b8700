"""The whole schema: the core tables plus each feature's tables, on one `metadata`.

A feature keeps its tables in its own module (`tables_<feature>.py`, using
`gateway.storage.tables.metadata`) and is imported here, so Alembic and the schema test
see every table.
"""

from __future__ import annotations

import gateway.storage.tables_responses
import gateway.storage.tables_spend  # noqa: F401
from gateway.storage import tables_templates  # noqa: F401
from gateway.storage.tables import metadata

__all__ = ["metadata"]
