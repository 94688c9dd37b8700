"""The shared store: counters in Redis, one Lua script per reserve and one per settle.

Each script checks and updates every scope and budget of a request in one atomic step on
the Redis server, with the server's clock, so several replicas share exact counters. Keys
(prefix `gw:`):

  <scope>:w  ZSET   lease -> admitted at (ms): the 60 s window (rpm = its size)
  <scope>:h  HASH   lease -> tokens, `_sum` -> tokens in the window (tpm)
  <scope>:c  ZSET   lease -> lease expiry (ms): open requests (max_concurrent)
  b:<counter>:s     spent nano-dollars in the budget window (seeded from SQL when missing)
  b:<counter>:r     HASH lease -> reserved nano-dollars, `_sum`
  b:<counter>:l     ZSET lease -> lease expiry (ms)
  lease:<id>        HASH `s` = r (reserved) | d (settled): makes both scripts idempotent

`carry` puts what a replica counted while Redis was away into these keys (see shared.py).

A lease that is neither settled nor renewed (its replica crashed) expires after the lease
TTL: its concurrency slot and reserved cost are freed by the next script that looks.
Not for Redis Cluster: a request's keys span hash slots (use one primary, or Sentinel).
"""

from __future__ import annotations

import os
from importlib.resources import files
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.limits.model import WINDOW_S, BudgetLimit, Decision, Reservation, Room
from gateway.limits.store import Carry

PREFIX = "gw:"
SETTLED_TAIL_MS = 60_000  # a settled lease's record stays this long (absorbs a retried settle)


def _lua(name: str) -> str:
    """A script of `lua/` (package data); each file's head says its KEYS and ARGV."""
    return (files("gateway.limits") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_LUA_COMMON = _lua("common")  # helpers, prepended to the scripts that use them
_RESERVE = _LUA_COMMON + _lua("reserve")
_SETTLE = _lua("settle")
_RENEW = _LUA_COMMON + _lua("renew")
_ADD_SPEND = _lua("add_spend")
_CARRY = _LUA_COMMON + _lua("carry")
_CARRY_ARGS_PER_CALL = 30_000  # entries are sent in calls of about this many arguments


def _scope_keys(scope_id: str) -> tuple[str, str, str]:
    base = PREFIX + scope_id
    return base + ":w", base + ":h", base + ":c"


def _budget_keys(counter: str) -> tuple[str, str, str]:
    base = PREFIX + "b:" + counter
    return base + ":s", base + ":r", base + ":l"


def _lim(value: int | None) -> int:
    return -1 if value is None else value


def _room(limit: int, left: int, reset_ms: int) -> Room | None:
    return None if limit < 0 else Room(limit, left, max(0, reset_ms) / 1000)


def connect(url: str, *, timeout_s: float = 0.5, max_connections: int = 64) -> Redis:
    """A client that fails fast (one quick retry for a stale pooled connection)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s,
        socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1), health_check_interval=0)
    return Redis(connection_pool=pool)


class RedisStore:
    def __init__(self, client: Redis, *, lease_ttl_s: float = 60.0) -> None:
        self.client = client
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._renew = client.register_script(_RENEW)
        self._add_spend = client.register_script(_ADD_SPEND)
        self._carry = client.register_script(_CARRY)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    @staticmethod
    def _keys(r: Reservation) -> list[str]:
        keys = [PREFIX + "lease:" + r.lease_id]
        for s in r.scopes:
            keys.extend(_scope_keys(s.id))
        for b in r.budgets:
            keys.extend(_budget_keys(b.counter))
        return keys

    async def reserve(self, r: Reservation) -> Decision:
        args: list[Any] = [r.lease_id, r.tokens, r.cost_nanos, self.lease_ttl_ms,
                           int(WINDOW_S * 1000), len(r.scopes), len(r.budgets)]
        for s in r.scopes:
            args += [_lim(s.rpm), _lim(s.tpm), _lim(s.max_concurrent)]
        for b in r.budgets:
            args += [b.limit_nanos, b.baseline_nanos, b.ttl_s * 1000]
        out = await self._reserve(keys=self._keys(r), args=args)
        ok, reason, index, retry_ms, large = (int(out[0]), out[1], int(out[2]), int(out[3]),
                                              int(out[4]))
        requests = _room(int(out[5]), int(out[6]), int(out[7]))
        tokens = _room(int(out[8]), int(out[9]), int(out[10]))
        if ok:
            r.store = self
            return Decision(True, requests=requests, tokens=tokens)
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        ns = len(r.scopes)
        kind = r.scopes[index].kind if index < ns else r.budgets[index - ns].kind
        retry = None if reason == "budget" else max(0, retry_ms) / 1000
        return Decision(False, reason, kind, retry, too_large=bool(large), requests=requests,
                        tokens=tokens)

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        args: list[Any] = [r.lease_id, tokens, cost_nanos, len(r.scopes), len(r.budgets),
                           SETTLED_TAIL_MS]
        for b in r.budgets:
            args += [b.baseline_nanos, b.ttl_s * 1000]
        await self._settle(keys=self._keys(r), args=args)
        r.settled = True

    async def renew(self, reservations: list[Reservation]) -> int:
        """Extend the leases of requests still running (one round trip for all of them)."""
        if not reservations:
            return 0
        keys: list[str] = []
        args: list[Any] = [self.lease_ttl_ms]
        for r in reservations:
            zsets = [_scope_keys(s.id)[2] for s in r.scopes if s.max_concurrent is not None]
            hashes: list[str] = []
            for b in r.budgets:
                _, held, leases = _budget_keys(b.counter)
                zsets.append(leases)
                hashes.append(held)
            keys += [PREFIX + "lease:" + r.lease_id, *zsets, *hashes]
            args += [r.lease_id, len(zsets), len(hashes)]
        return int(await self._renew(keys=keys, args=args))

    async def add_spend(self, amounts: list[tuple[BudgetLimit, int]]) -> None:
        """Add spend counted elsewhere (while Redis was down); safe to retry."""
        if not amounts:
            return
        keys = [PREFIX + "replay:" + os.urandom(8).hex()]
        args: list[Any] = [SETTLED_TAIL_MS]
        for b, amount in amounts:
            keys.append(_budget_keys(b.counter)[0])
            args += [amount, b.baseline_nanos, b.ttl_s * 1000]
        await self._add_spend(keys=keys, args=args)

    async def carry(self, counted: Carry, open_leases: list[str]) -> None:
        """Add what another store counted (see `_CARRY`); `open_leases` become Redis leases
        (settled and renewed here from now on). Safe to retry."""
        items: list[tuple[int, tuple[str, ...], list[Any]]] = []  # (kind, keys, n + entries)

        def add(kind: int, keys: tuple[str, ...], entries: list[tuple[Any, ...]]) -> None:
            flat: list[Any] = [len(entries)]
            for entry in entries:
                flat.extend(entry)
            items.append((kind, keys, flat))

        for scope_id, windowed in counted.windows.items():
            add(0, _scope_keys(scope_id)[:2],
                [(lease, int(age * 1000), tokens) for lease, age, tokens in windowed])
        for scope_id, active in counted.active.items():
            add(1, _scope_keys(scope_id)[2:],
                [(lease, max(1, int(left * 1000))) for lease, left in active])
        for counter, holds in counted.holds.items():
            add(2, _budget_keys(counter)[1:],
                [(lease, cost, max(1, int(left * 1000))) for lease, cost, left in holds])
        calls: list[list[tuple[int, tuple[str, ...], list[Any]]]] = [[]]
        size = 0
        for item in items:  # in calls of about _CARRY_ARGS_PER_CALL arguments, kinds in order
            if size and size + len(item[2]) > _CARRY_ARGS_PER_CALL:
                calls.append([])
                size = 0
            calls[-1].append(item)
            size += len(item[2])
        for i, call in enumerate(calls):
            leases = open_leases if i == len(calls) - 1 else []
            if not call and not leases:
                continue
            keys = [key for _, item_keys, _ in call for key in item_keys]
            keys += [PREFIX + "lease:" + lease for lease in leases]
            args: list[Any] = [int(WINDOW_S * 1000), self.lease_ttl_ms,
                               *(sum(1 for kind, _, _ in call if kind == k) for k in range(3)),
                               len(leases)]
            for _, _, flat in call:
                args.extend(flat)
            await self._carry(keys=keys, args=args)

    async def spent(self, counter: str) -> int | None:
        value = await self.client.get(_budget_keys(counter)[0])
        return None if value is None else int(value)
