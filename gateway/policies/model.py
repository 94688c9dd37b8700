"""The policy file shape (DESIGN.md), parsed strictly."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.config import CacheRules

PII_KINDS = ("email", "phone", "credit_card", "us_ssn", "iban", "ip_address", "secret",
             "person", "location")
PII_ACTIONS = ("allow", "redact", "mask", "hash", "block")

PiiKind = Literal["email", "phone", "credit_card", "us_ssn", "iban", "ip_address", "secret",
                  "person", "location"]
PiiAction = Literal["allow", "redact", "mask", "hash", "block"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AppliesTo(_Strict):
    teams: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)


class ModelRules(_Strict):
    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)

    def permits(self, model: str) -> bool:
        if model in self.deny:
            return False
        return self.allow is None or model in self.allow


class Limits(_Strict):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)
    max_input_tokens: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)


class Budget(_Strict):
    usd: float = Field(ge=0)
    period: Literal["day", "month", "total"] = "month"


class PiiRules(_Strict):
    input: dict[PiiKind, PiiAction] = Field(default_factory=dict)
    output: dict[PiiKind, PiiAction] = Field(default_factory=dict)
    restore: bool = False


class AuditRules(_Strict):
    bodies: Literal["none", "redacted", "full"] = "redacted"


class Policy(_Strict):
    name: str = Field(min_length=1, max_length=128)
    applies_to: AppliesTo = AppliesTo()
    models: ModelRules | None = None
    limits: Limits | None = None
    budget: Budget | None = None
    pii: PiiRules | None = None
    audit: AuditRules | None = None
    cache: CacheRules | None = None


SECTIONS = ("models", "limits", "budget", "pii", "audit", "cache")
