"""The `/v1` template stage: `"template": {"name", "version" | "label", "variables"}` in a body.

Runs before model access (the template may supply the model). Chat: the rendered messages
come first, the request's own `messages` after them. Completions: the rendered contents,
joined by a blank line, become the prompt; a request `prompt` string is appended after
another blank line (each string of a prompt list gets the template text in front; token
prompts cannot be combined with a template). The template's `model` and `params` apply where
the request leaves them unset (absent or null). The `template` field itself is removed from
the body once expanded (its variables are in the messages now, where later stages such as
PII redaction see them). The audit event gets `template_name` and `template_version`.
Errors are 400s whose `param` points into the request: `template.name`, `template.version`,
`template.label`, `template.variables.NAME`, or `template` for a render failure.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import ServerConfig
from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import excerpt, invalid_value
from gateway.pipeline.stages.parse import read_stream_flags
from gateway.protocols import validate
from gateway.templates.errors import TemplateError
from gateway.templates.registry import TemplateRegistry

_FIELDS = frozenset({"name", "version", "label", "variables"})
_IN_BODY = ("name", "version", "label", "variables")


def _in_request(exc: TemplateError) -> TemplateError:
    param = exc.param or ""
    exc.param = f"template.{param}" if param.startswith(_IN_BODY) else "template"
    return exc


class TemplateStage:
    def __init__(self, registry: TemplateRegistry, server: ServerConfig) -> None:
        self.registry = registry
        self.server = server

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        if ctx.body.get("template") is not None:
            await self.expand(ctx)
        return await call_next(ctx)

    async def expand(self, ctx: RequestContext) -> None:
        spec = ctx.body["template"]
        if not ctx.protocol.templates:
            raise invalid_value("template", "templates apply to chat, completions and messages "
                                "requests only")
        name = spec["name"]  # the body checks made sure of an object with a string name
        event = ctx.event.fields
        event["template_name"] = name[:128]
        for key in spec:
            if key not in _FIELDS:
                raise invalid_value(f"template.{key}",
                                    f"unknown field {excerpt('template.' + key)} "
                                    "(use name, version or label, variables)")
        version = spec.get("version")
        label = spec.get("label")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                    or version < 1):
            raise invalid_value("template.version", "'template.version' must be a positive integer")
        if label is not None and not isinstance(label, str):
            raise invalid_value("template.label", "'template.label' must be a string")
        if version is not None and label is not None:
            raise invalid_value("template.label", "give 'template.version' or 'template.label', "
                                "not both")
        body = ctx.body
        try:
            found = self.registry.resolve(name, version=version, label=label,
                                          user=body.get("user"))
            event["template_version"] = found.version
            messages = await self.registry.render(found, spec.get("variables"))
        except TemplateError as exc:
            raise _in_request(exc) from None
        del body["template"]
        ctx.template = found
        if body.get("model") is None and found.model:
            body["model"] = found.model
        merge = getattr(ctx.protocol, "merge_template", None)
        if merge is not None:  # a protocol with its own shape (Responses: input items)
            merge(ctx, found, messages)
            read_stream_flags(ctx)
            return
        for key, value in found.params.items():
            if body.get(key) is None:
                # a copy: later stages may edit the body, never the cached version
                body[key] = orjson.loads(orjson.dumps(value)) if isinstance(value, dict | list) \
                    else value
        n = body.get("n")
        if isinstance(n, int) and n > self.server.max_n:
            raise invalid_value("n", f"'n' must be at most {self.server.max_n}")
        apply = getattr(ctx.protocol, "apply_template", None)
        if apply is not None:  # a protocol's own shape (Messages: system, then messages)
            apply(body, messages)
        elif ctx.endpoint == "chat":
            validate.check_tool_choice(body)  # tools and tool_choice may each come from either
            own = body.get("messages") or []
            if len(messages) + len(own) > self.server.max_messages:
                raise invalid_value("messages",
                                    f"the template's and the request's messages together "
                                    f"are more than {self.server.max_messages}")
            body["messages"] = messages + own
        else:
            body["prompt"] = _prompt(messages, body.get("prompt"))
        read_stream_flags(ctx)  # the template's params may ask for a stream


def _prompt(messages: list[dict[str, str]], own: Any) -> str | list[str]:
    text = "\n\n".join(m["content"] for m in messages)
    if own is None:
        return text
    if isinstance(own, str):
        return f"{text}\n\n{own}" if own else text
    if isinstance(own, list) and all(isinstance(p, str) for p in own):
        return [f"{text}\n\n{p}" if p else text for p in own]
    raise invalid_value("prompt", "a template cannot be combined with a token-array prompt")
