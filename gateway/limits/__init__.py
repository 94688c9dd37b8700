"""Rate limits, budgets and spend: reserve before the provider call, settle after it.

`model` holds the plain types, `store` the in-process store, `redis_store` the shared one
(one Lua script per reserve and per settle), `shared` the Redis store with its fallback
(`limits.on_redis_error`), `plan` turns a request into scopes and an estimate, `stage` is
the pipeline stage, `spend` the batched spend rollups, `limiter` wires them for the app.
"""
