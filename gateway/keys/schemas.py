"""Admin request bodies (pydantic: strict types, unknown fields refused) and response shapes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.pricing import NANOS_PER_USD, usd
from gateway.timeutil import iso, parse_iso

TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

Limit = Annotated[int, Field(gt=0, le=1_000_000_000)]
Budget = Annotated[float, Field(ge=0, le=1_000_000_000)]
Period = Literal["day", "month", "total"]
Name = Annotated[str, Field(min_length=1, max_length=128)]
ModelList = Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=1000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None


class KeyCreate(_Body):
    name: Name
    team: str | None = None
    role: Literal["app", "admin", "compliance"] = "app"
    models: ModelList | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    max_concurrent: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period = "month"
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("expires_at", mode="before")
    @classmethod
    def _parse_expiry(cls, value: Any) -> datetime | None:
        return _expiry(value)


class KeyUpdate(_Body):
    name: Name | None = None
    team: str | None = None
    role: Literal["app", "admin", "compliance"] | None = None
    models: ModelList | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    max_concurrent: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("expires_at", mode="before")
    @classmethod
    def _parse_expiry(cls, value: Any) -> datetime | None:
        return _expiry(value)


class TeamCreate(_Body):
    name: Name
    models: ModelList | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    max_concurrent: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period = "month"
    policy: str | None = None

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not TEAM_NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (it appears in URLs)")
        return value


class TeamUpdate(_Body):
    models: ModelList | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    max_concurrent: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period | None = None
    policy: str | None = None


def to_row(fields: dict[str, Any]) -> dict[str, Any]:
    """API fields -> column values (USD -> integer nano-dollars)."""
    row = dict(fields)
    if "budget_usd" in row:
        budget = row.pop("budget_usd")
        row["budget_nanos"] = None if budget is None else round(budget * NANOS_PER_USD)
    if row.get("budget_period", "x") is None:
        row.pop("budget_period")
    return row


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "team": row["team"], "role": row["role"],
        "models": row["models"], "rpm": row["rpm"], "tpm": row["tpm"],
        "max_concurrent": row["max_concurrent"], "budget_usd": usd(row["budget_nanos"]),
        "budget_period": row["budget_period"], "expires_at": iso(row["expires_at"]),
        "metadata": row["metadata"], "key_prefix": row["key_prefix"],
        "created_at": iso(row["created_at"]), "revoked_at": iso(row["revoked_at"]),
        "revoked": row["revoked_at"] is not None,
    }


def key_fingerprint(row: dict[str, Any]) -> str:
    """What identifies a key's secret in the audit log: a prefix of its stored SHA-256 (one
    way; neither the secret nor its first characters)."""
    return "sha256:" + str(row["key_hash"])[:16]


def key_change_view(row: dict[str, Any]) -> dict[str, Any]:
    """A key as an admin-change event records it: its fields, the secret only as a
    fingerprint (not even `key_prefix`, which is the secret's first characters)."""
    view = key_view(row)
    del view["key_prefix"]
    view["key_fingerprint"] = key_fingerprint(row)
    return view


def team_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "models": row["models"], "rpm": row["rpm"],
        "tpm": row["tpm"], "max_concurrent": row["max_concurrent"],
        "budget_usd": usd(row["budget_nanos"]), "budget_period": row["budget_period"],
        "policy": row["policy"], "created_at": iso(row["created_at"]),
    }
