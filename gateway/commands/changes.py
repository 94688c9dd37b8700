"""Admin changes made from the CLI: one audit event each, in a chain of the command's own.

The CLI works on the database directly (no gateway needs to run), so it writes its events
itself (`gateway.audit.direct`): the same fields as the admin API's events (`action`,
`target_type`, `target_id`, `target_name`, `before`, `after`), with `key_id` and
`actor_key_id` `cli` and `key_name` `cli <user>@<host>`. Only changes made are recorded; a
command refused before it changed anything (a usage error, an unknown key) writes nothing.
"""

from __future__ import annotations

from typing import Any

from gateway.core.audit_event import AuditEvent
from gateway.ids import time_ordered_id
from gateway.settings import Settings


class ChangeLog:
    """The changes one command run made, written as one chain by `write`."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.events: list[dict[str, Any]] = []

    def add(self, action: str, target_type: str, target_id: str | None,
            target_name: str | None, before: Any, after: Any) -> None:
        from gateway.audit.direct import CLI_KEY_ID, cli_actor_name

        event = AuditEvent(f"cli-{time_ordered_id()}", self.command)
        event.fields.update(key_id=CLI_KEY_ID, key_name=cli_actor_name())
        event.change(action, target_type, target_id, target_name)
        event.changed(before, after)
        event.close(200)
        self.events.append(event.fields)

    async def write(self, engine: Any, settings: Settings) -> None:
        from gateway.audit.chain import hasher_from_settings
        from gateway.audit.direct import write_chain

        if self.events:
            await write_chain(engine, hasher_from_settings(settings), self.events)
            self.events = []
