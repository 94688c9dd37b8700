"""Audit events a command writes straight to SQL (the CLI's admin changes, a purge).

A command runs beside the gateways, not inside one: it has no spool and no committer. Its
events form a chain of their own, named after the run (`cli-<host>-<random>`), numbered
1, 2, … in the order given, hash-chained exactly as a replica's (HMAC when a key is set) and
stored in one transaction; `gateway audit verify` checks it like every other chain.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from gateway.audit.bodies import body_text
from gateway.audit.chain import GENESIS, Hasher, row_from_event, to_wire
from gateway.audit.shipper import store_records
from gateway.ids import time_ordered_id

CLI_KEY_ID = "cli"


def cli_actor_name() -> str:
    """Who ran the command, as the event's `key_name`: `cli alice@host`."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"cli {user}@{socket.gethostname()}"[:128]


def chain_name(prefix: str) -> str:
    return f"{prefix}-{socket.gethostname()[:40]}-{time_ordered_id()[-6:]}"


async def write_chain(engine: Any, hasher: Hasher, events: list[dict[str, Any]],
                      prefix: str = "cli", response_bodies: list[Any] | None = None) -> str:
    """Store `events` (closed `AuditEvent.fields`) as one new chain; returns its name.
    `response_bodies[i]`, when given, is stored (and hashed) as event i's response body."""
    replica = chain_name(prefix)
    records: list[dict[str, Any]] = []
    prev = GENESIS
    for seq, event in enumerate(events, start=1):
        row = row_from_event(event, strict=True)
        row.update(replica=replica, seq=seq, prev_hash=prev)
        body = response_bodies[seq - 1] if response_bodies else None
        text = None if body is None else body_text(body)
        row["hash"] = prev = hasher.row_hash(row, None, text)
        record: dict[str, Any] = {"e": to_wire(row)}
        if text is not None:
            record["rb"], record["sb"] = None, text
        records.append(record)
    if records:
        await store_records(engine, records)
    return replica
