"""How values read on the pages: UTC times said as such, money as dollars, yes/no for flags,
field names in words, statuses coloured by class (Jinja filters, registered in `ui.web`)."""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

FIELD_LABELS = {
    "request_id": "Request id", "received_at": "Received",
    "first_byte_at": "First byte", "completed_at": "Completed", "latency_ms": "Latency (ms)",
    "key_id": "Key id", "key_name": "Key", "team": "Team", "user": "End user",
    "endpoint": "Endpoint", "model_requested": "Model requested",
    "model_served": "Model served", "deployment": "Deployment", "attempts": "Attempts",
    "fallback_used": "Fallback used", "template_name": "Template",
    "template_version": "Template version", "input_tokens": "Input tokens",
    "output_tokens": "Output tokens", "total_tokens": "Total tokens",
    "usage_source": "Usage from", "cost_usd": "Cost (USD)", "cost_estimated": "Cost estimated",
    "status_code": "Status", "error_code": "Error code", "stream": "Streamed",
    "cancelled": "Cancelled by the client", "partial": "Answer cut short",
    "prev_hash": "Previous hash", "hash": "Hash", "action": "Change",
    "actor_key_id": "Changed by (key id)", "target_type": "Target type",
    "target_id": "Target id", "target_name": "Target", "budget_usd": "Budget (USD)",
    "budget_period": "Budget period", "rpm": "Requests per minute",
    "tpm": "Tokens per minute", "max_concurrent": "Max concurrent", "models": "Models",
    "expires_at": "Expires", "revoked_at": "Revoked at", "revoked": "Revoked",
    "key_fingerprint": "Key fingerprint", "created_at": "Created", "role": "Role",
    "name": "Name", "metadata": "Metadata", "policy": "Policy", "version": "Version",
    "content_hash": "Content hash", "description": "Description", "model": "Model",
    "label": "Label", "canary": "Canary", "source": "Source", "path": "File",
    "events": "Events", "oldest_received_at": "Oldest event", "deleted": "Deleted",
    "cutoff": "Cut-off", "policies": "Policies",
}
ACTION_LABELS = {
    "key.create": "Key created", "key.update": "Key updated", "key.revoke": "Key revoked",
    "team.create": "Team created", "team.update": "Team updated",
    "template.create": "Template created", "template.version.create": "Version created",
    "template.label.set": "Label moved", "template.label.delete": "Label removed",
    "policy.save": "Policy saved", "policy.reload": "Policies reloaded",
    "audit.purge": "Audit log purged",
}
USAGE_SOURCES = {"provider": "the provider", "estimated": "estimated by the gateway"}


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name) or name.replace("_", " ").capitalize()


def action_label(action: str | None) -> str:
    return "" if not action else ACTION_LABELS.get(action, action)


def utc(value: Any, seconds: bool = True) -> str:
    """`2026-12-08T00:29:20.123Z` → `2026-12-08 00:29:20 UTC`; anything else as it is."""
    if not value:
        return "—"
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return str(value)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def usd(value: Any) -> str:
    """Dollars without exponents: 1e-07 → `$0.0000001`, 1 → `$1.00`, 0.98956 → `$0.9896`."""
    if value is None:
        return "—"
    number = float(value)
    if number == 0:
        return "$0.00"
    if abs(number) < 0.01:
        return "$" + f"{number:.9f}".rstrip("0")
    whole, _, cents = f"{number:,.4f}".partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


def human(value: Any, name: str = "") -> str:
    """A value for a person: yes/no, `—` for nothing, dollars, UTC times, lists joined."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith("_usd") and isinstance(value, int | float):
        return usd(value)
    if name.endswith("_at") and isinstance(value, str):
        return utc(value)
    if name == "usage_source":
        return USAGE_SOURCES.get(str(value), str(value))
    if name == "action":
        return action_label(str(value))
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, list):
        return ", ".join(human(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return "; ".join(f"{field_label(str(k))}: {human(v, str(k))}" for k, v in value.items())
    return str(value)


def status_class(status: Any) -> str:
    """`status-ok` (2xx, 3xx), `status-client` (4xx), `status-server` (5xx and 0)."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return ""
    if 200 <= code < 400:
        return "status-ok"
    return "status-client" if 400 <= code < 500 else "status-server"


def change_rows(before: Any, after: Any) -> list[dict[str, Any]]:
    """An admin change as rows `{"field", "before", "after", "changed"}` (changed first)."""
    if not isinstance(before, dict) and not isinstance(after, dict):
        return []
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    names = list(dict.fromkeys([*old, *new]))
    rows = [{"field": n, "before": old.get(n), "after": new.get(n),
             "changed": (n in old) != (n in new) or old.get(n) != new.get(n)} for n in names]
    return sorted(rows, key=lambda r: not r["changed"])


PII_LABELS = {"email": "Email address", "phone": "Phone number",
              "credit_card": "Credit card number", "us_ssn": "US social security number",
              "iban": "IBAN", "ip_address": "IP address",
              "secret": "Secret (API key, token, private key)", "person": "Person's name",
              "location": "Location"}


def pii_label(kind: Any) -> str:
    return PII_LABELS.get(str(kind), str(kind))


def status_text(status: Any) -> str:
    """The reason phrase of an HTTP status (`429` → `Too Many Requests`)."""
    try:
        return HTTPStatus(int(status)).phrase
    except (TypeError, ValueError):
        return ""


def zip_self(values: Any) -> list[tuple[Any, Any]]:
    """Picker options whose text is their value."""
    return [(v, v) for v in values]


FILTERS = {"utc": utc, "usd": usd, "human": human, "field_label": field_label,
           "action_label": action_label, "status_class": status_class, "pii_label": pii_label,
           "pii_label_pair": lambda kind: (kind, pii_label(kind)), "status_text": status_text,
           "zip_self": zip_self}
