"""One audit event per request: opened when the request arrives, closed once, then submitted.

Every surface uses this one lifecycle: the `/v1` pipeline, the admin API, the UI, the CLI and
the answers for unrouted paths. An admin change also says what it changed (`change`, then
`changed` with the values before and after). `fields` is what the audit writer stores; the
start time for the latency is kept beside it, never in it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.context import Principal
from gateway.ids import time_ordered_id
from gateway.timeutil import utcnow

# Every admin-change `action` (DESIGN.md "Admin-change events"), and what it changes.
ADMIN_ACTIONS: dict[str, str] = {
    "key.create": "key", "key.update": "key", "key.revoke": "key",
    "team.create": "team", "team.update": "team",
    "template.create": "template", "template.version.create": "template",
    "template.label.set": "template", "template.label.delete": "template",
    "policy.save": "policy", "policy.reload": "policy",
    "audit.purge": "audit", "cache.purge": "cache",
}
TARGET_TYPES = ("key", "team", "template", "policy", "audit", "cache")


class EventSink(Protocol):
    """Where closed events go (the audit writer)."""

    def submit(self, event: dict[str, Any]) -> None: ...


class AuditEvent:
    __slots__ = ("_t0", "closed", "fields")

    def __init__(self, request_id: str, endpoint: str) -> None:
        # One clock read for both, so ordering by id is ordering by received_at (to the ms).
        received = datetime.now(UTC)
        self.fields: dict[str, Any] = {
            "id": time_ordered_id(int(received.timestamp() * 1000)),
            "request_id": request_id,
            "received_at": received.replace(tzinfo=None),
            "endpoint": endpoint,
            "attempts": 0,
            "fallback_used": False,
            "stream": False,
            "cancelled": False,
            "partial": False,
            "cost_estimated": False,
        }
        self._t0 = time.perf_counter()
        self.closed = False

    @property
    def id(self) -> str:
        return self.fields["id"]

    def set_principal(self, principal: Principal) -> None:
        fields = self.fields
        fields["key_id"] = principal.key_id
        fields["key_name"] = principal.key_name
        fields["team"] = principal.team

    def change(self, action: str, target_type: str, target_id: str | None = None,
               target_name: str | None = None) -> None:
        """Mark this event as an admin change (DESIGN.md "Admin-change events"): set before
        the change is tried, so a refused change is found by its action and target too."""
        fields = self.fields
        fields["action"] = action
        fields["target_type"] = target_type
        if target_id is not None:
            fields["target_id"] = target_id
        if target_name is not None:
            fields["target_name"] = target_name

    def changed(self, before: Any, after: Any, *, target_id: str | None = None,
                target_name: str | None = None) -> None:
        """The change was made: its values before and after (secrets only as fingerprints),
        and the target's id and name where only the change itself could tell them."""
        fields = self.fields
        fields["before"], fields["after"] = before, after
        if target_id is not None:
            fields["target_id"] = target_id
        if target_name is not None:
            fields["target_name"] = target_name

    def close(self, status_code: int, error_code: str | None = None) -> None:
        """Status, error code, completion time and latency; once (a second call is a no-op)."""
        if self.closed:
            return
        self.closed = True
        fields = self.fields
        fields["status_code"] = status_code
        fields["error_code"] = error_code
        fields["completed_at"] = utcnow()
        fields["latency_ms"] = round((time.perf_counter() - self._t0) * 1000, 3)
        if "action" in fields:  # an admin change: who made it (the key that called)
            fields["actor_key_id"] = fields.get("key_id")

    def submit_to(self, sink: EventSink, status_code: int, error_code: str | None = None
                  ) -> None:
        """Close (if not yet) and hand the event to the writer."""
        self.close(status_code, error_code)
        sink.submit(self.fields)
