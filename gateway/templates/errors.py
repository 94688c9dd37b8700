"""Template errors: each is a 400 (404 for admin reads of what does not exist) naming the problem.

Codes (the `code` of the OpenAI-shaped error):

| code | when |
|---|---|
| `template_not_found` | no template by that name |
| `template_version_not_found` | the template has no such version |
| `template_label_not_found` | the template has no such label |
| `template_variable_missing` | a required variable was not given |
| `template_variable_unknown` | a variable the template does not declare |
| `template_variable_invalid` | wrong type, not in `enum`, or over `max_length` |
| `template_invalid` | a template body or file that does not validate or compile |
| `template_unsafe` | sandbox escape: dunder / private attributes, forbidden tags or calls |
| `template_render_limit` | rendering ran over its time, size, loop or range bound |
| `template_render_error` | rendering failed otherwise (e.g. a missing attribute of a value) |
"""

from __future__ import annotations

from gateway.errors import InvalidRequest, NotFound, excerpt


class TemplateError(InvalidRequest):
    """A 400 about a template; `param` is relative (`variables.x`) until the caller prefixes it."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message, param=param, code=code)

    def under(self, prefix: str | None) -> TemplateError:
        """The same error with `param` placed under `prefix` (`template` in a `/v1` body)."""
        if prefix and self.param:
            self.param = f"{prefix}.{self.param}"
        elif prefix and not self.param:
            self.param = prefix
        return self

    def as_not_found(self) -> NotFound:
        """The admin API answers 404 for reads of a template, version or label that is absent."""
        return NotFound(self.message, param=self.param, code=self.code)


def not_found(name: str) -> TemplateError:
    return TemplateError(f"unknown template {excerpt(name)}", code="template_not_found",
                         param="name")


def unsafe(message: str, param: str | None = None) -> TemplateError:
    return TemplateError(message, code="template_unsafe", param=param)


def limit(message: str, param: str | None = None) -> TemplateError:
    return TemplateError(message, code="template_render_limit", param=param)
