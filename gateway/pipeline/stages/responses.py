"""`/v1/responses`: stored state and what a model's route can serve (after model access,
before limits and PII, so replayed items are counted and scanned like the request's own).

- The request gets its one response id (`ResponseState.id`, `resp_` + random hex), whatever
  the upstream calls it.
- A model that any of its deployments (or its fallbacks') serves by translation to Chat
  takes function tools and Chat's item kinds only: a hosted tool (web_search, file_search,
  …), a hosted tool choice or another item kind is a 400 naming it.
- `previous_response_id` must name a stored response of this key: anything else (another
  key's, unknown, expired, deleted) is 404 `not_found`, the same answer for all. A response
  that a native upstream holds (`upstream_id`) pins the request to that deployment and the
  upstream replays it; otherwise the chain's stored items (each turn's input, then its output,
  oldest first; reasoning items left out) are put into `input` after a template's items and
  before the request's own.
- With `store` (the default), the response is written before the client gets it (a stream:
  before its terminal event), with the request's own input items as they went upstream and
  the answer with this request's PII placeholders concealed again: what is stored is what
  the upstream saw. Only completed and incomplete responses are stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import NotFound, excerpt
from gateway.protocols.responses import ResponseState, own_response, response_state
from gateway.protocols.responses_shapes import input_items, replayed, stored_item
from gateway.protocols.responses_validate import CHAT_ITEMS, check_translatable
from gateway.routing.router import Router
from gateway.storage.responses import ResponseStore, StoredResponse

log = logging.getLogger("gateway.responses")
NATIVE = "responses"
_STORED_STATUSES = frozenset({"completed", "incomplete"})


def not_found(response_id: Any, param: str | None = None) -> NotFound:
    return NotFound(f"no response with id {excerpt(response_id)} was found", param=param)


class ResponsesState:
    def __init__(self, store: ResponseStore, router: Router) -> None:
        self.store = store
        # (model, deployment label) of the deployments that speak Responses themselves
        self.native = frozenset((name, s.target.deployment) for name, slots in
                                router.slots.items() for s in slots if NATIVE in s.target.native)
        # models that a route by translation may serve (a deployment, or a fallback's)
        self.translated = frozenset(
            name for name in router.slots
            if any(NATIVE not in s.target.native
                   for m in (name, *router.fallbacks.get(name, ()))
                   for s in router.slots.get(m, ())))

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        if ctx.endpoint != "responses":
            return await call_next(ctx)
        body = ctx.body
        state = response_state(ctx)
        state.store = body.get("store") is not False
        translated = ctx.model in self.translated
        if translated:
            check_translatable(body)
        previous = None
        if body.get("previous_response_id") is not None:
            previous = await self._continue(ctx, state, translated)
        if state.store:
            async def save(response: dict[str, Any]) -> None:
                await self._save(ctx, state, previous, response)
            state.on_final = save
        reply = await call_next(ctx)
        if reply.body is not None:
            own_response(reply.body, state)
            state.final = reply.body
            if state.store:
                await self._save(ctx, state, previous, reply.body)
        return reply

    async def _continue(self, ctx: RequestContext, state: ResponseState, translated: bool
                        ) -> StoredResponse:
        body, principal = ctx.body, ctx.principal
        assert principal is not None
        wanted = body["previous_response_id"]
        state.previous_id = wanted
        previous = await self.store.find(wanted, principal.key_id)
        if previous is None:
            raise not_found(wanted, "previous_response_id")
        if previous.upstream_id is not None and previous.model == ctx.model and \
                (ctx.model, previous.deployment) in self.native:
            ctx.pinned_deployment = previous.deployment
            body["previous_response_id"] = previous.upstream_id
            return previous
        history: list[dict[str, Any]] = []
        for record in await self.store.chain(previous):
            history += replayed(record.input_items)
            history += replayed(record.response.get("output") or [])
        if translated:
            history = [i for i in history if i.get("type", "message") in CHAT_ITEMS]
        del body["previous_response_id"]
        own = input_items(body.get("input"))
        at = state.template_items
        body["input"] = own[:at] + history + own[at:]
        state.history_items = len(history)
        return previous

    async def _save(self, ctx: RequestContext, state: ResponseState,
                    previous: StoredResponse | None, response: Mapping[str, Any]) -> None:
        status = response.get("status")
        principal, target = ctx.principal, ctx.target
        if status not in _STORED_STATUSES or principal is None or ctx.model is None:
            return
        stored = ctx.conceal(response) if ctx.conceal is not None else response
        skip = state.template_items + state.history_items
        own = [stored_item(i) for i in input_items(ctx.body.get("input"))[skip:]
               if isinstance(i, Mapping)]
        native = target is not None and NATIVE in target.native
        try:
            await self.store.save(
                response_id=state.id, owner_key_id=principal.key_id, team=principal.team,
                previous=previous, model=ctx.model,
                deployment=target.deployment if target is not None else None,
                upstream_id=state.upstream_id if native else None, status=str(status),
                input_items=own, response=dict(stored))
        except Exception as exc:  # the answer stands; the response just cannot be chained on
            log.error("could not store a response", extra={
                "request_id": ctx.event.fields.get("request_id"), "error": type(exc).__name__})
