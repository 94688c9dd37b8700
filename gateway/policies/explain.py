"""The effective policy of a key with every source: the key's own settings, its team's, and
the policy files, merged the way requests are checked (`limits.Limiter`, the access stage).

- models: a request's model must be allowed by each of the key, the team and the policy, so
  `allow` is the intersection of those that restrict (null: every model), `deny` the policy's;
- limits: the key's, its policy's and its team's each apply, so each limit is the tightest
  (the smallest), `max_input_tokens`/`max_output_tokens` the policy's;
- budget: every budget applies in its own period (`budgets` lists them); `budget` is the
  most specific one (the key's, else its policy's, else its team's);
- `sources` names the policies used (DESIGN.md), `section_sources` says where each section
  came from (`key NAME`, `team NAME`, `policy NAME`).
"""

from __future__ import annotations

from typing import Any

from gateway.context import Principal
from gateway.policies.store import EffectivePolicy
from gateway.pricing import usd

_LIMITS = ("rpm", "tpm", "max_concurrent")


def explain(principal: Principal, policy: EffectivePolicy, name: str) -> dict[str, Any]:
    out = policy.as_dict(name)
    team = principal.team_record
    key_src, team_src = f"key {principal.key_name}", f"team {principal.team}"
    policy_src = {section: f"policy {name}" for section, name in policy.origins}
    sources: dict[str, list[str]] = {"models": [], "limits": [], "budget": [], "pii": [],
                                     "audit": []}

    # models
    allows: list[set[str]] = []
    if principal.models is not None:
        allows.append(set(principal.models))
        sources["models"].append(key_src)
    if team is not None and team.models is not None:
        allows.append(set(team.models))
        sources["models"].append(team_src)
    deny: list[str] = []
    if policy.models is not None:
        if policy.models.allow is not None:
            allows.append(set(policy.models.allow))
        deny = list(policy.models.deny)
        sources["models"].append(str(policy_src["models"]))
    if allows or deny:
        allowed = sorted(set.intersection(*allows)) if allows else None
        out["models"] = {"allow": allowed, "deny": deny}

    # limits: the tightest of each
    limits: dict[str, Any] = dict(out["limits"] or {})
    layers = [(key_src, {n: getattr(principal, n) for n in _LIMITS})]
    if team is not None:
        layers.append((team_src, {n: getattr(team, n) for n in _LIMITS}))
    if policy.limits is not None:
        layers.append((str(policy_src["limits"]),
                       {n: getattr(policy.limits, n) for n in _LIMITS}))
    for source, values in layers:
        used = False
        for n, value in values.items():
            if value is not None and (limits.get(n) is None or value < limits[n]):
                limits[n] = value
                used = True
        if used or (source.startswith("policy") and policy.limits is not None):
            sources["limits"].append(source)
    if limits:
        for n in (*_LIMITS, "max_input_tokens", "max_output_tokens"):
            limits.setdefault(n, None)
        out["limits"] = limits

    # budgets: each applies
    budgets: list[dict[str, Any]] = []
    if principal.budget_nanos is not None:
        budgets.append({"usd": usd(principal.budget_nanos), "period": principal.budget_period,
                        "source": key_src})
    if policy.budget is not None:
        budgets.append({"usd": policy.budget.usd, "period": policy.budget.period,
                        "source": str(policy_src["budget"])})
    if team is not None and team.budget_nanos is not None:
        budgets.append({"usd": usd(team.budget_nanos), "period": team.budget_period,
                        "source": team_src})
    if budgets:
        out["budget"] = {"usd": budgets[0]["usd"], "period": budgets[0]["period"]}
        sources["budget"] = [str(b["source"]) for b in budgets]
    out["budgets"] = budgets
    sources["pii"] = [policy_src["pii"]] if "pii" in policy_src else []
    sources["audit"] = [policy_src.get("audit", "audit.bodies in gateway.yaml")]
    out["section_sources"] = sources
    return out
