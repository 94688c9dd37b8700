"""`create_app(settings, config)`: the only place concrete classes are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Scope

from gateway.api import (
    admin_cache,
    admin_keys,
    admin_policies,
    admin_spend,
    admin_teams,
    admin_templates,
    health,
    v1,
)
from gateway.api import audit as audit_api
from gateway.api import metrics as metrics_api
from gateway.api import responses as responses_api
from gateway.api.audit_durability import AuditDurabilityMiddleware
from gateway.api.cors import CorsMiddleware, PreflightHook
from gateway.api.middleware import RequestIdMiddleware
from gateway.api.tracing_middleware import TracingMiddleware
from gateway.audit.writer import AuditWriter
from gateway.cache.keys import KeyMaker, route_fingerprints
from gateway.cache.rules import RulesBook
from gateway.cache.store import CacheStore, MemoryCache, RedisCache
from gateway.config import LoadedConfig, load_config
from gateway.core.audit_event import AuditEvent
from gateway.core.stages import Handler
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, clip
from gateway.keys.authenticator import Authenticator
from gateway.limits.headers import RoomMemory
from gateway.limits.limiter import Limiter
from gateway.offline_data import price_map_path, use_offline_tiktoken
from gateway.pii.output import pii_hash_key
from gateway.pipeline.chain import count_tokens_pipeline, model_pipeline, model_stages
from gateway.pipeline.stages.cache import CacheLookup
from gateway.policies.store import policies_for
from gateway.preload import preload
from gateway.pricing import PriceBook
from gateway.protocols.anthropic import COUNT_TOKENS, MESSAGES
from gateway.protocols.anthropic_translate import MessagesTranslator
from gateway.protocols.responses_translate import ResponsesTranslator
from gateway.providers.anthropic_native import NativeMessages
from gateway.providers.bridge import Bridge, Translator
from gateway.providers.demo import DemoProvider
from gateway.providers.litellm_adapter import LiteLLMProvider
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.routing.router import Router
from gateway.routing.shared_pauses import SharedPauses
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage.engine import create_engine, ping
from gateway.storage.keys import KeyStore, TeamStore
from gateway.storage.outage import unexpected_error
from gateway.storage.responses import ResponseStore
from gateway.storage.templates import TemplateStore
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.recorder import MetricsRecorder
from gateway.telemetry.tracing import TraceRecorder, Tracing
from gateway.templates.files import prompt_files_for
from gateway.templates.registry import TemplateRegistry
from gateway.ui import routes as ui_routes
from gateway.web.responses import error_response

log = logging.getLogger("gateway")


def build_services(settings: Settings, config: LoadedConfig) -> Services:
    use_offline_tiktoken(settings.litellm_data_dir)
    metrics = Metrics()
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    keys = KeyStore(engine)
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    auth = Authenticator(keys, admin_key, settings.key_cache_ttl_s)
    tracing = Tracing.from_environment(capture_content=settings.trace_content)
    # Wrapped so each provider attempt is a trace span (a no-op when tracing is off).
    # Messages to the deployments that speak it go as they came (`NativeMessages`).
    providers = tracing.wrap_providers({
        "demo": DemoProvider(), "direct": NativeMessages(OpenAICompatProvider()),
        "litellm": NativeMessages(LiteLLMProvider())})
    # Other client protocols, by translation where a deployment does not speak them.
    translators: dict[str, Translator] = {"messages": MessagesTranslator()}
    translators["responses"] = ResponsesTranslator()
    providers = {name: Bridge(p, translators) for name, p in providers.items()}
    # With Redis, a deployment's Retry-After holds on every replica.
    shared_pauses = SharedPauses.from_url(settings.redis_url) if settings.redis_url else None
    router = Router(config, providers, metrics=metrics,
                    price_map=price_map_path(settings.litellm_data_dir),
                    shared_pauses=shared_pauses)
    prices = PriceBook.build(config, price_map_path(settings.litellm_data_dir))
    limiter = Limiter.build(settings, config, engine, prices, metrics)
    hmac_key = settings.audit_hmac_key.get_secret_value().encode() \
        if settings.audit_hmac_key else None
    spool_dir, spool_max_bytes, replica_hint = _worker_spool(settings, config)
    audit = AuditWriter(engine, batch_size=settings.audit_batch_size,
                        flush_interval_s=settings.audit_flush_interval_ms / 1000,
                        spool_dir=spool_dir, spool_max_bytes=spool_max_bytes,
                        on_store_error=config.audit.on_store_error,
                        fsync=settings.audit_spool_fsync, hmac_key=hmac_key,
                        replica_hint=replica_hint,
                        body_limit=settings.audit_body_max_chars, metrics=metrics)
    policies = policies_for(config)
    hash_key = pii_hash_key(settings)
    templates = TemplateRegistry(TemplateStore(engine),
                                 max_output_chars=config.server.max_body_bytes)
    recorders: list = [MetricsRecorder(metrics, router.models())]
    if tracing.enabled:
        recorders.append(TraceRecorder(tracing))
    rooms = RoomMemory()
    responses = ResponseStore(engine, config.responses.retention_days)
    cache = CacheLookup(RulesBook(config), KeyMaker(
        hashlib.sha256(b"gateway-cache:" + hash_key).digest(), route_fingerprints(config)),
        cache_store(settings, config), metrics)
    stages = model_stages(config=config, auth=auth, router=router, limiter=limiter,
                          audit_writer=audit, policies=policies, templates=templates,
                          metrics=metrics, pii_hash_key=hash_key, recorders=recorders,
                          translated=router.translated, rooms=rooms, responses=responses,
                          cache=cache)
    pipeline = model_pipeline(stages, router)
    own_chains = {COUNT_TOKENS.path: count_tokens_pipeline(stages, router)}
    return Services(settings=settings, config=config, engine=engine, keys=keys,
                    teams=TeamStore(engine), auth=auth, router=router, audit=audit, v1=pipeline,
                    v1_own_chains=own_chains,
                    limits=limiter,
                    policies=policies, templates=templates, metrics=metrics, tracing=tracing,
                    pii_hash_key=hash_key, rooms=rooms, responses=responses,
                    cache=cache)


def cache_store(settings: Settings, config: LoadedConfig) -> CacheStore:
    """Redis when the limiter has one (replicas share answers), else this process's LRU."""
    store = config.raw.cache_store
    if settings.redis_url:
        return RedisCache.from_url(settings.redis_url, max_entry_bytes=store.max_entry_kb * 1024)
    return MemoryCache(store.max_mb * 1024 * 1024, store.max_entry_kb * 1024)


def _worker_spool(settings: Settings, config: LoadedConfig) -> tuple[Path, int, str | None]:
    """This process's audit spool folder, size cap and chain-name hint: with `--workers N`,
    worker 0 keeps the spool folder (so a restart with another N continues its chain),
    worker i its `worker-<i>` subfolder; `spool_max_mb` is shared out between them."""
    folder = config.path(config.audit.spool_dir)
    max_bytes = config.audit.spool_max_mb * 1024 * 1024
    if settings.workers <= 1:
        return folder, max_bytes, settings.replica_id
    if settings.worker:
        folder = folder / f"worker-{settings.worker}"
    hint = f"{settings.replica_id or socket.gethostname() or 'gateway'}-w{settings.worker}"
    return folder, max_bytes // settings.workers, hint


async def _check_schema(svc: Services) -> None:
    try:
        await ping(svc.engine, schema=True)
    except Exception as exc:  # report and keep serving: /readyz tells the orchestrator
        log.error("database not ready: run `gateway migrate` first",
                  extra={"reason": type(exc).__name__})


def _audit_unrouted(request: Request, exc: GatewayError) -> None:
    """Unknown `/v1` paths and methods are requests too: they get their audit event."""
    if not request.url.path.startswith("/v1/"):
        return
    svc: Services = request.app.state.services
    AuditEvent(request.state.request_id, request.url.path).submit_to(
        svc.audit, exc.status_code, exc.code)


def _preflight_auditor(svc: Services) -> PreflightHook:
    """CORS preflights on `/v1` paths are requests too: each gets its audit event."""
    def audit(scope: Scope, status: int, code: str | None) -> None:
        if scope["path"].startswith("/v1/"):
            AuditEvent(scope["state"]["request_id"], scope["path"]).submit_to(
                svc.audit, status, code)
    return audit


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err: GatewayError = MethodNotAllowed(f"{clip(request.method)} is not allowed on "
                                             "this path")
    elif exc.status_code == 404:
        err = NotFound(f"no such endpoint: {clip(request.method)} {clip(request.url.path)}")
    else:
        err = GatewayError(str(exc.detail))
        err.status_code = exc.status_code
    _audit_unrouted(request, err)
    if request.url.path.startswith(MESSAGES.path):  # Anthropic's clients: their envelope
        return Response(MESSAGES.error_body(err), status_code=err.status_code,
                        media_type="application/json", headers=err.headers or None)
    return error_response(err)


async def _unhandled(request: Request, exc: Exception) -> Response:
    return error_response(unexpected_error(exc, log, "unhandled error"))


class GatewayApp(Starlette):
    """Starlette, with `outer` middleware around everything and the `/v1` model endpoints
    answered by `V1Front` before Starlette's own error middleware and router."""

    def __init__(self, pipeline: Handler, *, outer: list[Middleware],
                 own_chains: dict[str, Handler] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pipeline = pipeline
        self.own_chains = own_chains
        self.outer = outer

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = v1.V1Front(super().build_middleware_stack(), self.pipeline,
                                  self.own_chains)
        for cls, args, kwargs in reversed(self.outer):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings | None = None, config: LoadedConfig | None = None) -> Starlette:
    settings = settings or Settings()
    config = config or load_config(settings.config)
    svc = build_services(settings, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _check_schema(svc)
        # prompts/ -> SQL before serving; a bad file stops the start (ConfigError lines)
        await svc.templates.startup(prompt_files_for(svc.config, svc.templates.env))
        await svc.audit.start()
        await svc.limits.start()
        await svc.router.start()
        if svc.settings.preload:
            loaded = await asyncio.to_thread(preload, svc.config, svc.router.translated)
            log.info("preloaded", extra={"loaded": loaded})
        # Start-up objects live for the whole process: keep them out of every GC pass
        # (a full pass over them was the p99 tail under load).
        gc.collect()
        gc.freeze()
        gc.enable()  # `gateway serve` starts with it off (start-up makes no garbage worth it)
        log.info("gateway ready", extra={"models": svc.router.models()})
        try:
            yield
        finally:
            await svc.templates.stop()
            if svc.responses is not None:
                await svc.responses.close()
            await svc.limits.stop()
            await svc.audit.stop()
            if svc.tracing is not None:
                await asyncio.to_thread(svc.tracing.shutdown)
            await svc.router.close()
            await svc.engine.dispose()

    tracing_middleware = [Middleware(TracingMiddleware, tracing=svc.tracing)] \
        if svc.tracing is not None and svc.tracing.enabled else []
    # CORS inside the request id (a preflight answer has one too), around everything else
    # (errors, 503s from the audit gate included, get its headers).
    cors_middleware = [Middleware(CorsMiddleware, cors=svc.config.cors,
                                  on_preflight=_preflight_auditor(svc))] \
        if svc.config.cors is not None else []
    app = GatewayApp(
        svc.v1, own_chains=svc.v1_own_chains,
        outer=[Middleware(RequestIdMiddleware), *cors_middleware, *tracing_middleware,
               Middleware(AuditDurabilityMiddleware, writer=svc.audit)],
        routes=[*v1.routes, *admin_keys.routes, *admin_teams.routes, *admin_policies.routes,
                *admin_templates.routes, *admin_spend.routes, *health.routes, *audit_api.routes,
                *metrics_api.routes, *ui_routes.routes, *responses_api.routes,
                *admin_cache.routes],
        exception_handlers={HTTPException: _http_exception, Exception: _unhandled},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # paths are exact
    app.state.services = svc
    return app
