"""Bearer key -> Principal, through a short-lived in-process cache (no DB trip per request)."""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict

from gateway.context import BOOTSTRAP, Principal
from gateway.errors import Unauthorized
from gateway.storage.ids import hash_secret
from gateway.storage.keys import KeyStore
from gateway.timeutil import utcnow

_NEGATIVE_CACHE_MAX = 10_000


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


class Authenticator:
    def __init__(self, keys: KeyStore, admin_key: str | None, ttl_s: float) -> None:
        self.keys = keys
        self._admin_key = admin_key.encode() if admin_key else None
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._negative: OrderedDict[str, float] = OrderedDict()

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached keys (all, or one key's entries) so a change is seen at once."""
        if key_id is None:
            self._cache.clear()
            return
        for h, (p, _) in list(self._cache.items()):
            if p is not None and p.key_id == key_id:
                del self._cache[h]

    def invalidate_team(self, team: str) -> None:
        for h, (p, _) in list(self._cache.items()):
            if p is not None and p.team == team:
                del self._cache[h]

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        if self._admin_key is not None and hmac.compare_digest(token.encode(), self._admin_key):
            return BOOTSTRAP
        digest = hash_secret(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            neg = self._negative.get(digest)
            if neg is not None and neg > now:
                raise Unauthorized("invalid API key")
            principal = await self.keys.find_principal(digest)
            if principal is None:
                self._negative[digest] = now + self.ttl_s
                if len(self._negative) > _NEGATIVE_CACHE_MAX:
                    self._negative.popitem(last=False)
                raise Unauthorized("invalid API key")
            self._cache[digest] = (principal, now + self.ttl_s)
        assert principal is not None
        if principal.revoked:
            raise Unauthorized("this API key has been revoked", principal=principal)
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise Unauthorized("this API key has expired", principal=principal)
        return principal
