"""Bearer key -> Principal, through a short-lived in-process cache (no DB trip per request).

A miss is looked up once however many requests carry the key at that moment: the others wait
for the same lookup (many clients on one key would otherwise all query the database each
time the entry expires).

While the key store cannot be reached (see `storage.outage`) a replica answers from what it
knows: a key it has seen, as it last saw it (valid, revoked or unknown: 401 for the bad
ones), when that was at most `STALE_IF_ERROR_S` before its last successful lookup; any
other key is 503 `auth_unavailable`, never a 500. After a failed lookup, misses skip the
database for `RETRY_AFTER_FAILURE_S` (requests with new keys do not each wait for a
connection that will fail), and one lookup gives up after `LOOKUP_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict

from gateway.context import BOOTSTRAP, Principal
from gateway.errors import AuthUnavailable, Unauthorized
from gateway.ids import hash_secret
from gateway.storage.keys import KeyStore
from gateway.storage.outage import is_store_outage
from gateway.timeutil import utcnow

_NEGATIVE_CACHE_MAX = 10_000
# What a replica knew of a key when it last reached the store still holds during an outage,
# if it learnt it at most this long before that last contact (a revocation older than that
# may not have been seen).
STALE_IF_ERROR_S = 900.0
RETRY_AFTER_FAILURE_S = 1.0
LOOKUP_TIMEOUT_S = 5.0


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
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}
        # Bumped by every invalidation: a lookup that began before one does not cache its
        # (possibly stale) answer.
        self._generation = 0
        self._last_success = float("-inf")  # monotonic time of the last answered lookup
        self._down_until = float("-inf")  # misses do not try the store before this

    def _forget_lookups(self) -> None:
        self._generation += 1
        self._lookups.clear()

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached keys (all, or one key's entries) so a change is seen at once."""
        self._forget_lookups()
        if key_id is None:
            self._cache.clear()
            return
        for h, (p, _) in list(self._cache.items()):
            if p is not None and p.key_id == key_id:
                del self._cache[h]

    def invalidate_team(self, team: str) -> None:
        self._forget_lookups()
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
            found = await self._lookup_or_last_known(digest, now)
            if found is None:
                raise Unauthorized("invalid API key")
            principal = found
        if principal is None:  # a cached miss is kept in the negative cache, not here
            raise Unauthorized("invalid API key")
        if principal.revoked:
            raise Unauthorized("this API key has been revoked", principal=principal)
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise Unauthorized("this API key has expired", principal=principal)
        return principal

    async def _lookup_or_last_known(self, digest: str, now: float) -> Principal | None:
        """The store's answer; while it cannot be reached, the last one this replica had."""
        if now < self._down_until:
            return self._last_known(digest)
        try:
            return await self._lookup(digest)
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE_S
            return self._last_known(digest)

    def _last_known(self, digest: str) -> Principal | None:
        """The expired cache entry of this key, if recent enough; else `AuthUnavailable`."""
        # Entries hold their expiry: learnt at expiry - ttl.
        oldest_expiry = self._last_success - STALE_IF_ERROR_S + self.ttl_s
        cached = self._cache.get(digest)
        if cached is not None and cached[1] >= oldest_expiry:
            return cached[0]
        neg = self._negative.get(digest)
        if neg is not None and neg >= oldest_expiry:
            return None
        raise AuthUnavailable("the key store cannot be reached to check this API key; "
                              "retry shortly")

    async def _lookup(self, digest: str) -> Principal | None:
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch(digest))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda done: self._forget_lookup(digest, done))
        # Shielded: one waiter giving up (a client that left) does not cancel the others'.
        return await asyncio.shield(lookup)

    def _forget_lookup(self, digest: str, done: asyncio.Future[Principal | None]) -> None:
        if self._lookups.get(digest) is done:
            del self._lookups[digest]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter already got it

    async def _fetch(self, digest: str) -> Principal | None:
        generation = self._generation
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            principal = await self.keys.find_principal(digest)
        self._last_success = time.monotonic()
        if generation != self._generation:
            return principal  # answer this lookup's waiters, but do not cache it
        expires = self._last_success + self.ttl_s
        if principal is None:
            self._negative[digest] = expires
            self._negative.move_to_end(digest)
            if len(self._negative) > _NEGATIVE_CACHE_MAX:
                self._negative.popitem(last=False)
        else:
            self._cache[digest] = (principal, expires)
        return principal
