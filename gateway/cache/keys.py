"""Cache keys: a hard partition per scope, then a digest of everything that changes the answer.

A key reads `cache:v1:{scope}:{namespace}:{digest}`. `scope` is an HMAC (the deployment's
secret) of the scope the route's rules name (`key`, `team`, `user`, `global`), so it is a
storage prefix too: purging a tenant is deleting `cache:v1:{scope}:`, and no request reaches
another scope's entries whatever it sends (the scope comes from the authenticated key, never
from the body). `namespace` is the caller's own sub-partition inside its scope
(`x-gateway-cache-namespace`). `digest` covers the endpoint kind, the route the model name
resolves to (its deployments' provider, upstream model and base URL, and its fallbacks'),
the template name and version, the effective policy, and the body as it goes upstream (PII
already redacted) in canonical form: keys sorted, without the fields that do not change the
answer (stream flags, end-user ids, metadata).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.config import LoadedConfig
from gateway.context import Principal

SCHEMA = "v1"
# Body fields that never change the answer.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "safety_identifier",
                            "prompt_cache_key", "store"})
_MEMO_MAX = 10_000


def scope_of(kind: str, principal: Principal, user: str | None) -> str | None:
    """The partition a request reads and writes; None: not cacheable (a `user` route
    without an end user)."""
    if kind == "global":
        return "global"
    owner = f"team:{principal.team}" if principal.team else f"key:{principal.key_id}"
    if kind == "key":
        return f"key:{principal.key_id}"
    if kind == "team":
        return owner
    return f"user:{owner}:{user}" if user else None


class KeyMaker:
    def __init__(self, secret: bytes, routes: Mapping[str, str]) -> None:
        self.secret = secret
        self.routes = routes
        self._prefixes: dict[tuple[str, str | None], str] = {}
        self._policies: dict[int, tuple[Any, bytes]] = {}

    def prefix(self, scope: str, namespace: str | None = None) -> str:
        """`cache:v1:{scope}:{namespace}:`: everything of one scope (and namespace)."""
        memo = (scope, namespace)
        found = self._prefixes.get(memo)
        if found is None:
            tag = self._mac(b"scope\0" + scope.encode())
            ns = self._mac(b"ns\0" + scope.encode() + b"\0" + namespace.encode())[:16] \
                if namespace else "-"
            found = f"cache:{SCHEMA}:{tag}:{ns}:"
            if len(self._prefixes) >= _MEMO_MAX:
                self._prefixes.clear()
            self._prefixes[memo] = found
        return found

    def scope_prefix(self, scope: str) -> str:
        """Every entry of a scope, whatever its namespace (for a purge)."""
        tag = self._mac(b"scope\0" + scope.encode())
        return f"cache:{SCHEMA}:{tag}:"

    def digest(self, endpoint: str, model: str, template: Any, policy: Any,
               body: Mapping[str, Any]) -> str:
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{SCHEMA}\0{endpoint}\0{self.routes.get(model, model)}\0".encode())
        if template is not None:
            h.update(f"{getattr(template, 'name', '')}\0{getattr(template, 'version', '')}\0"
                     .encode())
        h.update(self._policy(policy))
        if IGNORED_FIELDS.isdisjoint(body):
            canonical = body
        else:
            canonical = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
        h.update(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS))
        return h.hexdigest()

    def _mac(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()[:32]

    def _policy(self, policy: Any) -> bytes:
        """The effective policy's version: a digest of its rules (memoised per object; the
        policy registry keeps one object per key, team and policy set)."""
        if policy is None:
            return b"-\0"
        found = self._policies.get(id(policy))
        if found is not None and found[0] is policy:
            return found[1]
        rules = policy.as_dict("") if hasattr(policy, "as_dict") else repr(policy)
        if isinstance(rules, dict):
            rules.pop("sources", None)
        version = hashlib.blake2b(orjson.dumps(rules, option=orjson.OPT_SORT_KEYS),
                                  digest_size=12).hexdigest().encode() + b"\0"
        if len(self._policies) >= _MEMO_MAX:
            self._policies.clear()
        self._policies[id(policy)] = (policy, version)
        return version


def route_fingerprints(config: LoadedConfig) -> dict[str, str]:
    """Per public model: a digest of what it resolves to (deployments, then fallbacks), so
    an alias pointed elsewhere never serves what the old route answered."""
    own: dict[str, list[Any]] = {}
    for i, model in enumerate(config.raw.models):
        own[model.name] = [[d.provider, d.upstream_model, config.api_base(i, j) or ""]
                           for j, d in enumerate(model.deployments)]
    out: dict[str, str] = {}
    for model in config.raw.models:
        chain = [own[model.name], *(own.get(fb, []) for fb in model.fallbacks)]
        out[model.name] = hashlib.blake2b(orjson.dumps(chain), digest_size=12).hexdigest()
    return out
