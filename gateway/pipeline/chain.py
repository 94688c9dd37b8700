"""The model-request chain, composed once at start-up: the same stages for every protocol."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from gateway.audit.bodies import BodyRecorder
from gateway.config import LoadedConfig
from gateway.core.request import RequestContext
from gateway.core.stages import Handler, Stage, compose
from gateway.keys.authenticator import Authenticator
from gateway.limits.headers import RoomMemory
from gateway.limits.limiter import Limiter
from gateway.pipeline.stages.access import ModelAccess
from gateway.pipeline.stages.audit import Audit
from gateway.pipeline.stages.audit_gate import AuditGate
from gateway.pipeline.stages.authenticate import Authenticate
from gateway.pipeline.stages.call import CallProvider
from gateway.pipeline.stages.cost import Cost
from gateway.pipeline.stages.count_tokens import CountTokens
from gateway.pipeline.stages.limits import LimitHeaders, Limits
from gateway.pipeline.stages.parse import Parse
from gateway.pipeline.stages.pii import Pii
from gateway.pipeline.stages.provider_fields import TranslatedFields
from gateway.pipeline.stages.responses import ResponsesState
from gateway.pipeline.stages.telemetry import Telemetry
from gateway.pipeline.stages.template import TemplateStage
from gateway.policies.store import PolicyRegistry
from gateway.routing.router import Router
from gateway.templates.registry import TemplateRegistry


def model_stages(*, config: LoadedConfig, auth: Authenticator, router: Router,
                 limiter: Limiter, audit_writer: Any, policies: PolicyRegistry,
                 templates: TemplateRegistry, metrics: Any, pii_hash_key: bytes,
                 recorders: list[Callable[[RequestContext], None]],
                 translated: Collection[str], rooms: RoomMemory,
                 responses: Any = None) -> list[Stage]:
    """Outermost first; see `gateway.pipeline.stages` for what each one does."""
    return [
        Telemetry(recorders),
        Audit(audit_writer, BodyRecorder(config.audit.bodies, router.models())),
        Authenticate(auth),
        LimitHeaders(rooms),
        Parse(config.server),
        AuditGate(audit_writer),
        # The template may supply the model: it comes before model access.
        TemplateStage(templates, config.server),
        ModelAccess(frozenset(router.slots), policies),
        # /v1/responses: its id, hosted tools, previous_response_id (before limits and PII)
        *([ResponsesState(responses, router)] if responses is not None else []),
        TranslatedFields(translated),
        Limits(limiter, rooms),
        Cost(limiter.prices, limiter.unpriced_models, limiter.metrics),
        Pii(pii_hash_key, metrics),
    ]


def model_pipeline(stages: list[Stage], router: Router) -> Handler:
    return compose(stages, CallProvider(router))


# Stages a token count skips: it is no model call (nothing is used, billed or templated).
_NOT_FOR_COUNTS = (TemplateStage, TranslatedFields, Limits, Cost)


def count_tokens_pipeline(stages: list[Stage], router: Router) -> Handler:
    """`/v1/messages/count_tokens`: the same stage objects, less the ones above."""
    return compose([s for s in stages if not isinstance(s, _NOT_FOR_COUNTS)],
                   CountTokens(router))
