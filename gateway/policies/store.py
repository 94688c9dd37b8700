"""Load `policies_dir`, and resolve the effective policy of a key: key, then team, then
`default`, section by section (the most specific policy that sets a section wins it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import ConfigError, dotted, read_yaml_mapping
from gateway.context import Principal
from gateway.policies.model import SECTIONS, AuditRules, Policy

DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """The merged sections and the names of the policies they came from."""

    models: Any
    limits: Any
    budget: Any
    pii: Any
    audit: AuditRules
    sources: tuple[str, ...]
    origins: tuple[tuple[str, str], ...] = ()  # (section, the policy it came from)
    cache: Any = None

    def as_dict(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "applies_to": {"teams": [], "keys": []}}
        for section in SECTIONS:
            value = getattr(self, section)
            out[section] = value.model_dump() if value is not None else None
        out["sources"] = list(self.sources)
        return out


def load_policy_file(path: Path, shown: str) -> tuple[Policy | None, list[str]]:
    data, problems = read_yaml_mapping(path, shown)
    if data is None:
        return None, problems
    return policy_from_mapping(data, shown)


def policy_from_mapping(data: dict[str, Any], shown: str) -> tuple[Policy | None, list[str]]:
    """A policy file's content, checked as `reload` checks it: the policy, or `FILE: key:
    reason` lines."""
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"]
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "literal_error" and len(loc) >= 3 and loc[0] == "pii":
                # dict keys and values of pii.input/output: say which it is
                reason = ("unknown kind" if loc[-1] == "[key]" else "unknown action") \
                    + f" ({err['msg']})"
                loc = tuple(p for p in loc if p != "[key]")
            lines.append(f"{shown}: {dotted(loc)}: {reason}")
        return None, lines
    if policy.pii is not None:
        from gateway.pii.policy import PiiPolicyError, parse_pii_policy

        try:  # the PII engine's own checks (e.g. person/location need the NER detector)
            parse_pii_policy(policy.pii.model_dump())
        except PiiPolicyError as exc:
            return None, [f"{shown}: {line}" for line in exc.lines]
    return policy, []


class PolicySet:
    def __init__(self, policies: dict[str, Policy], default_bodies: str = "redacted") -> None:
        self.policies = policies
        self.default_audit = AuditRules.model_validate({"bodies": default_bodies})
        self._by_key: dict[str, list[Policy]] = {}
        self._by_team: dict[str, list[Policy]] = {}
        for policy in policies.values():
            for key in policy.applies_to.keys:
                self._by_key.setdefault(key, []).append(policy)
            for team in policy.applies_to.teams:
                self._by_team.setdefault(team, []).append(policy)
        self._cache: dict[tuple[str, str | None, str | None], EffectivePolicy] = {}

    @classmethod
    def load(cls, folder: Path, shown_base: str | None = None,
             default_bodies: str = "redacted") -> PolicySet:
        """Read every `*.yaml`/`*.yml` in `folder`; raise `ConfigError` naming each bad file."""
        policies: dict[str, Policy] = {}
        problems: list[str] = []
        if folder.is_dir():
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                shown = f"{shown_base}/{path.name}" if shown_base else str(path)
                policy, errors = load_policy_file(path, shown)
                problems.extend(errors)
                if policy is None:
                    continue
                if policy.name in policies:
                    problems.append(f"{shown}: name: duplicate policy name {policy.name!r}")
                policies[policy.name] = policy
        if problems:
            raise ConfigError(problems)
        return cls(policies, default_bodies)

    def names(self) -> list[str]:
        return sorted(self.policies)

    def chain(self, principal: Principal) -> list[Policy]:
        """Most specific first: the key's policies, the team's (and its `policy`), `default`."""
        out: list[Policy] = []
        out.extend(self._by_key.get(principal.key_name, ()))
        if principal.team is not None:
            named = principal.team_record.policy if principal.team_record else None
            if named and named in self.policies:
                out.append(self.policies[named])
            out.extend(self._by_team.get(principal.team, ()))
        if DEFAULT in self.policies:
            out.append(self.policies[DEFAULT])
        seen: set[str] = set()
        unique = []
        for p in out:
            if p.name not in seen:
                seen.add(p.name)
                unique.append(p)
        return unique

    def effective(self, principal: Principal) -> EffectivePolicy:
        team_policy = principal.team_record.policy if principal.team_record else None
        cache_key = (principal.key_name, principal.team, team_policy)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        merged: dict[str, Any] = {}
        sources: list[str] = []
        origins: list[tuple[str, str]] = []
        for policy in self.chain(principal):
            used = False
            for section in SECTIONS:
                value = getattr(policy, section)
                if value is not None and section not in merged:
                    merged[section] = value
                    origins.append((section, policy.name))
                    used = True
            if used:
                sources.append(policy.name)
        result = EffectivePolicy(models=merged.get("models"), limits=merged.get("limits"),
                                 budget=merged.get("budget"), pii=merged.get("pii"),
                                 audit=merged.get("audit") or self.default_audit,
                                 sources=tuple(sources), origins=tuple(origins),
                                 cache=merged.get("cache"))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = result
        return result


def policy_set_change(policies: PolicySet) -> dict[str, Any]:
    """A policy set as an admin-change event records it: every policy, as loaded."""
    return {"policies": {name: policies.policies[name].model_dump(exclude_none=True)
                         for name in policies.names()}}


class PolicyRegistry:
    """The live policy set of a process; `reload` swaps it only when every file is valid."""

    def __init__(self, folder: Path, shown_base: str, default_bodies: str) -> None:
        self.folder = folder
        self.shown_base = shown_base
        self.default_bodies = default_bodies
        self.current = self._read()

    def _read(self) -> PolicySet:
        return PolicySet.load(self.folder, self.shown_base, self.default_bodies)

    def reload(self) -> PolicySet:
        self.current = self._read()  # raises ConfigError and keeps the old set
        return self.current

    def effective(self, principal: Principal) -> EffectivePolicy:
        return self.current.effective(principal)


def policies_for(config: Any) -> PolicyRegistry:
    """The registry for a loaded config (`policies_dir` relative to the config's folder)."""
    import os

    folder = config.path(config.raw.policies_dir)
    try:
        shown = os.path.relpath(folder)
    except ValueError:
        shown = str(folder)
    if shown.startswith(".."):
        shown = str(folder)
    return PolicyRegistry(folder, shown, config.audit.bodies)
