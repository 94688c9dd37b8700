"""Retry-After windows shared by the replicas through the limiter's Redis.

A replica that is asked to wait records the end of the window in the hash `gw:pauses`
(upstream id -> `<end, Redis ms> <kind>`, only ever lengthened) and announces it on the channel
`gw:pauses` (`<id> <ms from now> <kind>`), both in one script on Redis's clock, before the
request that met the wait is answered. Every replica listens on the channel and applies what it
hears to its own slots: the request path reads no Redis, and only a try that was told to wait
writes to it. On (re)connecting, and every `RESYNC_S`, a replica reads the hash, so a
replica that starts late or missed announcements while Redis was away catches up.

Redis down: each replica keeps honouring the waits it was told itself (and logs once); the
shared view comes back with Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.limits.redis_store import PREFIX, connect

log = logging.getLogger("gateway.routing")

KEY = PREFIX + "pauses"
CHANNEL = PREFIX + "pauses"
RESYNC_S = 10.0
RECONNECT_S = 1.0
ERRORS = (RedisError, OSError, TimeoutError)
_KINDS = {"r": True, "o": False}  # rate limit, other (a 503's Retry-After)

# KEYS: the hash. ARGV: id, ms, kind, channel. Lengthens a pause and announces it.
_NOTE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[2])
local untilms = now + ms
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local e = tonumber(string.match(old, '^%d+'))
  if e and e >= untilms then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], untilms .. ' ' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < ms + 1000 then
  redis.call('PEXPIRE', KEYS[1], ms + 1000)
end
redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. ms .. ' ' .. ARGV[3])
return 1
"""

Apply = Callable[[str, float, bool], None]


class SharedPauses:
    """The Redis side of `pauses.Pauses`: `publish` what this replica was told; `start` hears
    the others (started and closed with the router)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._note = client.register_script(_NOTE)
        self._listener: asyncio.Task[None] | None = None
        self.down_since: float | None = None

    @classmethod
    def from_url(cls, url: str) -> SharedPauses:
        return cls(connect(url, max_connections=8))

    # --- announcing ------------------------------------------------------------------------
    async def publish(self, pause_id: str, seconds: float, rate_limit: bool) -> None:
        """Record and announce a pause before the request that met it is answered, so the
        other replicas know of it by then. Not while Redis is known to be away (the listener
        finds out when it is back): a failure is logged, never raised."""
        if self.down_since is not None:
            return
        try:
            await self._note(keys=[KEY], args=[pause_id, max(1, round(seconds * 1000)),
                                               "r" if rate_limit else "o", CHANNEL])
        except ERRORS as exc:
            self._mark_down(exc)

    # --- listening -------------------------------------------------------------------------
    def start(self, apply: Apply) -> None:
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(apply))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def _listen(self, apply: Apply) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self.sync(apply)
                synced = time.monotonic()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is not None:
                        _heard(message.get("data"), apply)
                    if self.down_since is not None or time.monotonic() - synced >= RESYNC_S:
                        await self.sync(apply)  # (a failed announcement marked Redis down)
                        synced = time.monotonic()
            except Exception as exc:  # the listener outlives any failure
                self._mark_down(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_S)

    async def sync(self, apply: Apply) -> None:
        """Apply every pause still under way (one atomic read of Redis's clock and the hash)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.hgetall(KEY)
            (seconds, micros), entries = await pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        for raw_id, raw_value in entries.items():
            end, _, kind = _text(raw_value).partition(" ")
            if end.isdigit() and int(end) > now_ms and kind in _KINDS:
                apply(_text(raw_id), (int(end) - now_ms) / 1000, _KINDS[kind])
        if self.down_since is not None:
            self.down_since = None
            log.info("redis reachable again: Retry-After waits are shared again")

    def _mark_down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("redis unreachable: Retry-After waits are not shared for now",
                      extra={"reason": type(exc).__name__})


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _heard(data: Any, apply: Apply) -> None:
    parts = _text(data).split(" ")
    if len(parts) == 3 and parts[1].isdigit() and parts[2] in _KINDS:
        apply(parts[0], int(parts[1]) / 1000, _KINDS[parts[2]])
