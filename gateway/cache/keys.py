"""Cache keys: a hard partition per scope, then a digest of everything that changes the answer.

A key reads `cache:v1:{owner}:{within}:{digest}`. `owner` is an HMAC (the deployment's
secret) of the tenant the route's scope names: the key, its team (a key without one: the
key), or `global`; so it is a storage prefix too: purging a tenant is deleting
`cache:v1:{owner}:`, and no request reaches another tenant's entries whatever it sends (the
owner comes from the authenticated key, never from the body). `within` is the partition
inside it, `-` or an HMAC of the end user (`user` scope) and the caller's own namespace
(`x-gateway-cache-namespace`). `digest` covers the endpoint kind, the route the model name
resolves to (its deployments' provider, upstream model and base URL, and its fallbacks'),
the template name and version, the effective policy, the client headers that reach the
upstream (Messages: `anthropic-version`, `anthropic-beta`), and the body as it goes upstream (PII
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


def scope_of(kind: str, principal: Principal, user: str | None) -> tuple[str, str] | None:
    """(the tenant, the partition inside it) a request reads and writes; None: not
    cacheable (a `user` route without an end user)."""
    if kind == "global":
        return "global", ""
    if kind == "key":
        return f"key:{principal.key_id}", ""
    owner = f"team:{principal.team}" if principal.team else f"key:{principal.key_id}"
    if kind == "team":
        return owner, ""
    return (owner, f"user:{user}") if user else None


class KeyMaker:
    def __init__(self, secret: bytes, routes: Mapping[str, str]) -> None:
        self.secret = secret
        self.routes = routes
        self._prefixes: dict[tuple[str, str, str | None], str] = {}
        self._policies: dict[int, tuple[Any, bytes]] = {}

    def prefix(self, owner: str, within: str = "", namespace: str | None = None) -> str:
        """`cache:v1:{owner}:{within}:`: one partition of a tenant."""
        memo = (owner, within, namespace)
        found = self._prefixes.get(memo)
        if found is None:
            inner = self._mac(b"in\0" + owner.encode() + b"\0" + within.encode() + b"\0"
                              + (namespace or "").encode())[:16] \
                if within or namespace else "-"
            found = f"{self.owner_prefix(owner)}{inner}:"
            if len(self._prefixes) >= _MEMO_MAX:
                self._prefixes.clear()
            self._prefixes[memo] = found
        return found

    def owner_prefix(self, owner: str) -> str:
        """Every entry of a tenant (`team:NAME`, `key:ID`, `global`): what a purge deletes."""
        return f"cache:{SCHEMA}:{self._mac(b'owner' + bytes(1) + owner.encode())}:"

    def digest(self, endpoint: str, model: str, template: Any, policy: Any,
               body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> str:
        """`headers`: the client's headers that reach the upstream (`anthropic-beta`, ...)."""
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{SCHEMA}\0{endpoint}\0{self.routes.get(model, model)}\0".encode())
        if headers:
            h.update(orjson.dumps(headers, option=orjson.OPT_SORT_KEYS) + b"\0")
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
