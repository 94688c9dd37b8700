"""The cache rules of one request: the model's `cache:` block, with the fields a policy's
`cache:` block sets winning (the most specific policy that has the section: key, team,
then `default`). No block anywhere: the cache is off."""

from __future__ import annotations

from typing import Any

from gateway.config import CacheRules, LoadedConfig

_MEMO_MAX = 10_000


class RulesBook:
    def __init__(self, config: LoadedConfig) -> None:
        self.by_model: dict[str, CacheRules | None] = {
            name: model.cache for name, model in config.models.items()}
        self._merged: dict[tuple[str, int], tuple[Any, CacheRules | None]] = {}

    def of(self, model: str | None, policy: Any) -> CacheRules | None:
        """The rules, or None when the cache is off for this request."""
        own = self.by_model.get(model or "")
        override = getattr(policy, "cache", None)
        if override is None:
            return own if own is not None and own.enabled else None
        memo = (model or "", id(override))
        found = self._merged.get(memo)
        if found is None or found[0] is not override:
            merged = override if own is None else own.model_copy(update={
                name: getattr(override, name) for name in override.model_fields_set})
            found = (override, merged)
            if len(self._merged) >= _MEMO_MAX:
                self._merged.clear()
            self._merged[memo] = found
        rules = found[1]
        return rules if rules is not None and rules.enabled else None
