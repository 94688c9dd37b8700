"""The limiter of one process: its store, the budget baselines, spend rollups, upkeep.

Store: in-process by default; Redis (with the `limits.on_redis_error` fallback) when
`GATEWAY_REDIS_URL` is set. Budget baselines (each key's and team's spend in the current
day, month and in total) are read from the spend rollups at start and every few minutes;
they seed a budget counter the store does not have yet, so budgets survive restarts (of
the gateway, and of a Redis without persistence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.background import cancel_and_wait
from gateway.config import LoadedConfig
from gateway.context import Principal
from gateway.limits.model import (
    BudgetLimit,
    Decision,
    Reservation,
    ScopeLimit,
    window_name,
    window_ttl_s,
)
from gateway.limits.redis_store import RedisStore, connect
from gateway.limits.shared import SharedStore
from gateway.limits.spend import SpendLog
from gateway.limits.store import LEASE_TTL_S, MemoryStore
from gateway.pricing import NANOS_PER_USD, PriceBook
from gateway.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("gateway.limits")

TICK_S = 1.0
RENEW_EVERY_S = LEASE_TTL_S / 3
SWEEP_EVERY_S = 30.0
BASELINE_EVERY_S = 300.0


def _tighter(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _dominated(scope: ScopeLimit, key: ScopeLimit | None) -> bool:
    """A sub-scope of the key (an end user, a model) cannot bind when the key's limit is as
    tight in every dimension: its traffic is part of the key's."""
    if key is None:
        return False
    return all(mine is None or (theirs is not None and theirs <= mine)
               for mine, theirs in ((scope.rpm, key.rpm), (scope.tpm, key.tpm),
                                    (scope.max_concurrent, key.max_concurrent)))


class Limiter:
    def __init__(self, store: Any, spend: SpendLog, prices: PriceBook, *,
                 unpriced_models: str = "warn", metrics: Any = None) -> None:
        self.store = store
        self.spend = spend
        self.prices = prices
        self.unpriced_models = unpriced_models
        self.metrics = metrics
        self.baselines: dict[str, int] = {}
        self.active: dict[str, Reservation] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._upkeep: asyncio.Task[None] | None = None
        self._windows: dict[tuple[str, datetime], tuple[str, int]] = {}

    @classmethod
    def build(cls, settings: Settings, config: LoadedConfig, engine: AsyncEngine,
              prices: PriceBook, metrics: Any) -> Limiter:
        limits = config.limits
        store: Any
        if settings.redis_url:
            store = SharedStore(RedisStore(connect(settings.redis_url)),
                                mode=limits.on_redis_error,
                                # each worker of `serve --workers N` is a replica
                                replicas=limits.replicas * settings.workers,
                                metrics=metrics)
        else:
            store = MemoryStore()
        return cls(store, SpendLog(engine), prices, unpriced_models=limits.unpriced_models,
                   metrics=metrics)

    # --- what a request needs room in ------------------------------------------------------
    @staticmethod
    def scopes(principal: Principal, policy_limits: Any, model: str, user: str | None
               ) -> tuple[ScopeLimit, ...]:
        """Key (its record and its policy: the tighter wins), team (its record), end user
        and key x model (the policy's limits, kept only where they could bind)."""
        p = principal
        prpm = getattr(policy_limits, "rpm", None)
        ptpm = getattr(policy_limits, "tpm", None)
        pmaxc = getattr(policy_limits, "max_concurrent", None)
        out: list[ScopeLimit] = []
        key: ScopeLimit | None = None
        rpm, tpm, maxc = _tighter(p.rpm, prpm), _tighter(p.tpm, ptpm), \
            _tighter(p.max_concurrent, pmaxc)
        if rpm is not None or tpm is not None or maxc is not None:
            key = ScopeLimit("k:" + p.key_id, "key", rpm, tpm, maxc)
            out.append(key)
        team = p.team_record
        if team is not None and (team.rpm is not None or team.tpm is not None
                                 or team.max_concurrent is not None):
            out.append(ScopeLimit("t:" + team.name, "team", team.rpm, team.tpm,
                                  team.max_concurrent))
        if prpm is not None or ptpm is not None or pmaxc is not None:
            subs = [ScopeLimit(f"m:{p.key_id}:{model}", "key_model", prpm, ptpm, pmaxc)]
            if user:
                subs.append(ScopeLimit(f"u:{p.key_id}:{user}", "user", prpm, ptpm, pmaxc))
            out.extend(s for s in subs if not _dominated(s, key))
        return tuple(out)

    def budgets(self, principal: Principal, policy_budget: Any, now: datetime
                ) -> tuple[BudgetLimit, ...]:
        """The key's budget, its policy's (per key; the tighter wins in the same window) and
        its team's, each in its current calendar window."""
        found: dict[str, BudgetLimit] = {}

        def add(prefix: str, ident: str, kind: str, limit: int, period: str) -> None:
            name, ttl = self._window(period, now)
            counter = f"{prefix}:{ident}:{name}"
            held = found.get(counter)
            if held is None or limit < held.limit_nanos:
                found[counter] = BudgetLimit(counter, kind, limit,
                                             self.baselines.get(counter, 0), ttl)

        p = principal
        if p.budget_nanos is not None:
            add("k", p.key_id, "key", p.budget_nanos, p.budget_period)
        if policy_budget is not None:
            add("k", p.key_id, "key", round(policy_budget.usd * NANOS_PER_USD),
                policy_budget.period)
        team = p.team_record
        if team is not None and team.budget_nanos is not None:
            add("t", team.name, "team", team.budget_nanos, team.budget_period)
        return tuple(found.values())

    def _window(self, period: str, now: datetime) -> tuple[str, int]:
        """The window's name and counter TTL, computed once a minute (a TTL a minute long
        is harmless: it only says when an idle counter may be forgotten)."""
        cache_key = (period, now.replace(second=0, microsecond=0))
        found = self._windows.get(cache_key)
        if found is None:
            if len(self._windows) > 64:
                self._windows.clear()
            found = self._windows[cache_key] = (window_name(period, now),
                                                window_ttl_s(period, now))
        return found

    # --- reserve and settle ----------------------------------------------------------------
    async def reserve(self, r: Reservation) -> Decision:
        decision = await self.store.reserve(r)
        if decision.allowed and r.store is not None:
            self.active[r.lease_id] = r
        return decision

    def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        """Sync (it runs in a finisher): in-process at once, Redis as a task."""
        self.active.pop(r.lease_id, None)
        if r.settled or r.store is None:
            return
        if isinstance(r.store, MemoryStore) and r.store is self.store:
            r.store.settle_now(r, tokens, cost_nanos)
            return
        task = asyncio.get_running_loop().create_task(self.store.settle(r, tokens, cost_nanos))
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("settlement failed", exc_info=task.exception())

    # --- lifecycle ---------------------------------------------------------------------------
    async def refresh_baselines(self) -> None:
        try:
            self.baselines = await self.spend.period_spend()
        except Exception as exc:  # no table yet (not migrated), database down: keep going
            log.error("cannot load spend for budgets", extra={"reason": type(exc).__name__})

    async def start(self) -> None:
        await self.refresh_baselines()
        await self.spend.start()
        self._upkeep = asyncio.create_task(self._run_upkeep(), name="limits-upkeep")

    async def _run_upkeep(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = swept = based = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            try:
                if isinstance(self.store, SharedStore):
                    renew = now - renewed >= RENEW_EVERY_S
                    await self.store.maintain(list(self.active.values()) if renew else [])
                    if renew:
                        renewed = now
                else:
                    if now - renewed >= RENEW_EVERY_S:
                        self.store.renew(list(self.active.values()))
                        renewed = now
                    if now - swept >= SWEEP_EVERY_S:
                        self.store.sweep()
                        swept = now
                if now - based >= BASELINE_EVERY_S:
                    based = now
                    await self.refresh_baselines()
            except Exception:
                log.exception("limiter upkeep failed")

    async def stop(self) -> None:
        await cancel_and_wait(self._upkeep)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if isinstance(self.store, SharedStore):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.maintain([]), 5)
        await self.spend.stop()
        if isinstance(self.store, SharedStore):
            await self.store.close()

    def status(self) -> dict[str, Any]:
        if isinstance(self.store, SharedStore):
            return self.store.status()
        return {"store": "memory"}
