"""The caller's cache controls: `Cache-Control` and `x-gateway-cache-namespace`.

`no-cache`: do not read, answer fresh and store it (REFRESH). `no-store`: never write (a
hit may still serve). `max-age=N`: only entries at most N seconds old. Other directives are
ignored, as HTTP caches ignore what they do not know. The namespace is a sub-partition
inside the caller's scope, never a way out of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import invalid_value

NAMESPACE_HEADER = "x-gateway-cache-namespace"
_NAMESPACE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_MEMO_MAX = 1024


@dataclass(frozen=True, slots=True)
class Controls:
    no_cache: bool = False
    no_store: bool = False
    max_age_s: int | None = None


NONE = Controls()
_memo: dict[str, Controls] = {}


def parse_cache_control(value: str | None) -> Controls:
    if not value:
        return NONE
    found = _memo.get(value)
    if found is not None:
        return found
    no_cache = no_store = False
    max_age: int | None = None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            arg = arg.strip().strip('"')
            if arg.isdigit():
                age = int(arg)
                max_age = age if max_age is None else min(max_age, age)
    found = Controls(no_cache, no_store, max_age)
    if len(_memo) < _MEMO_MAX:
        _memo[value] = found
    return found


def namespace(value: str | None) -> str | None:
    """The caller's namespace, or 400 naming the header."""
    if value is None:
        return None
    if not _NAMESPACE.fullmatch(value):
        raise invalid_value(NAMESPACE_HEADER, f"the {NAMESPACE_HEADER} header must be 1-64 "
                            "letters, digits or . _ : -")
    return value
