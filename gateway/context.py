"""Internal types passed between stages: who is calling, and the request being served."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TeamRecord:
    id: str
    name: str
    models: frozenset[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget_nanos: int | None
    budget_period: str
    policy: str | None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a virtual key (with its team) or the bootstrap admin."""

    key_id: str
    key_name: str
    role: str  # app | admin | compliance
    team: str | None = None
    models: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_nanos: int | None = None
    budget_period: str = "month"
    expires_at: datetime | None = None
    revoked: bool = False
    team_record: TeamRecord | None = None

    def may_use_model(self, model: str) -> bool:
        """Key models, then team models; `None` means no restriction at that level."""
        if self.models is not None and model not in self.models:
            return False
        team = self.team_record
        return not (team is not None and team.models is not None and model not in team.models)


BOOTSTRAP = Principal(key_id="bootstrap", key_name="bootstrap", role="admin")
