"""Where cached answers live: in this process (one replica) or in Redis (replicas share it).

Both keep the same semantics: `get` an entry's bytes or None, `put` with a TTL, `purge` a
prefix (a scope). The in-process store is an LRU bounded by bytes. The Redis store is the
Redis the limiter uses (`GATEWAY_REDIS_URL`); any failure there is a miss (get) or a skipped
write (put), never an error, and after one the store rests for `retry_s` before trying
Redis again, so an outage costs no timeout per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

log = logging.getLogger("gateway.cache")


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def purge(self, prefix: str) -> int: ...


class MemoryCache:
    """An LRU of entries bounded by their total bytes; expired entries go when touched."""

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        cost = len(value) + len(key)
        if cost > self.max_entry_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self.size += cost
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def purge(self, prefix: str) -> int:
        doomed = [k for k in self._entries if k.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.size -= len(value) + len(key)

    def __len__(self) -> int:
        return len(self._entries)


class RedisCache:
    def __init__(self, client: Any, *, max_entry_bytes: int, retry_s: float = 2.0) -> None:
        self.client = client
        self.max_entry_bytes = max_entry_bytes
        self.retry_s = retry_s
        self.down_until = 0.0
        self._writes: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, max_entry_bytes: int, timeout_s: float = 0.25) -> RedisCache:
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(
            url, max_connections=32, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, health_check_interval=0)
        return cls(Redis(connection_pool=pool), max_entry_bytes=max_entry_bytes)

    @property
    def up(self) -> bool:
        return self.down_until <= time.monotonic()

    def _failed(self, exc: BaseException) -> None:
        if self.up:
            log.warning("cache store unavailable: serving misses",
                        extra={"error": type(exc).__name__})
        self.down_until = time.monotonic() + self.retry_s

    async def get(self, key: str) -> bytes | None:
        if not self.up:
            return None
        try:
            value = await self.client.get(key)
        except Exception as exc:  # any Redis or network failure: a miss
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        """Written in the background: the answer does not wait for Redis."""
        if not self.up or len(value) + len(key) > self.max_entry_bytes:
            return
        task = asyncio.get_running_loop().create_task(self._write(key, value, ttl_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await self.client.set(key, value, px=ttl_s * 1000)
        except Exception as exc:
            self._failed(exc)

    async def purge(self, prefix: str) -> int:
        count = 0
        batch: list[Any] = []
        async for key in self.client.scan_iter(match=_glob_literal(prefix) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                count += await self.client.delete(*batch)
                batch.clear()
        if batch:
            count += await self.client.delete(*batch)
        return count

    async def flush(self) -> None:
        """Wait for the writes in flight (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        await self.client.aclose()


def _glob_literal(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
