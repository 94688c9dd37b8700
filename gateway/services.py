"""What the HTTP surfaces need: built once by the app factory, found at `app.state.services`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.audit.writer import AuditWriter
from gateway.config import LoadedConfig
from gateway.core.stages import Handler
from gateway.keys.authenticator import Authenticator
from gateway.limits.headers import RoomMemory
from gateway.limits.limiter import Limiter
from gateway.policies.store import PolicyRegistry
from gateway.routing.router import Router
from gateway.settings import Settings
from gateway.storage.keys import KeyStore, TeamStore
from gateway.storage.responses import ResponseStore
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import Tracing
from gateway.templates.registry import TemplateRegistry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass
class Services:
    settings: Settings
    config: LoadedConfig
    engine: AsyncEngine
    keys: KeyStore
    teams: TeamStore
    auth: Authenticator
    router: Router
    audit: AuditWriter
    v1: Handler  # the model pipeline (every /v1 model endpoint)
    limits: Limiter
    policies: PolicyRegistry
    templates: TemplateRegistry
    metrics: Metrics
    tracing: Tracing | None = None
    pii_hash_key: bytes = b""
    rooms: RoomMemory = field(default_factory=RoomMemory)  # x-ratelimit-* without a decision
    responses: ResponseStore | None = None  # stored /v1/responses
    # /v1 routes with a chain of their own, by path (`/v1/messages/count_tokens`)
    v1_own_chains: dict[str, Handler] = field(default_factory=dict)
