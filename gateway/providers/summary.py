"""Short, safe summaries of upstream failures: what a client or a log line may see.

An upstream's error text can echo a (masked) API key, a bearer token, its own URL with
credentials in it, or a stack trace, in forms no pattern foresees (12 characters of a masked
key got through a scrubber once). So it is never forwarded: `upstream_failure` writes our own
sentence from the fields that cannot carry a secret: the HTTP status, the upstream's error
`code` or `type` and its `param` when each is a plain identifier (`rate_limit_exceeded`,
`max_tokens`), and whether the text said the context window overflowed (the router needs
that to pick a fallback). `scrub` stays as a second net for messages built elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CHARS = 300

# An upstream's text saying the input does not fit the model's context window.
CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|context[ _-]length|context[ _-]window|maximum context"
    r"|prompt is too long|input is too long|too many (?:input )?tokens|string_above_max_length",
    re.IGNORECASE)
_SAFE_CODE = re.compile(r"[a-z_]{1,64}")
_SAFE_PARAM = re.compile(r"[a-z_][a-z0-9_.\[\]]{0,63}")

_PATTERNS = (
    # URLs (credentials, internal hosts and paths included) and bare host:port / IP addresses
    (re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,15}://\S+"), "<url>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<host>"),
    (re.compile(r"\[[0-9a-fA-F:]{3,}\](?::\d+)?"), "<host>"),
    (re.compile(r"(?i)\blocalhost(?::\d+)?\b"), "<host>"),
    # bearer tokens, key-looking strings (also masked ones such as sk-abc***xyz), AWS ids
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=*-]+"), r"\1 ***"),
    (re.compile(r"(?i)\b(?:sk|pk|rk|sess|ghp|gho|github_pat|xox[abp])[-_][A-Za-z0-9_*.-]{6,}"),
     "***"),
    (re.compile(r"\bAKIA[0-9A-Z]{12,}\b"), "***"),
    (re.compile(r"(?i)\b(api[_-]?key|secret|password|token)(\s*[=:]\s*)\S+"), r"\1\2***"),
    # long opaque strings (base64 / hex secrets, JWT segments)
    (re.compile(r"[A-Za-z0-9_+/=]{32,}"), "***"),
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """The first line of `text`, shortened, with secrets, URLs and hosts replaced."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    for secret in secrets:
        if secret and len(secret) >= 4:
            line = line.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        line = pattern.sub(replacement, line)
    if len(line) > MAX_CHARS:
        line = line[:MAX_CHARS - 1] + "…"
    return line


def safe_code(value: object) -> str | None:
    """`value` when it is a plain error code (`rate_limit_exceeded`), else None."""
    return value if isinstance(value, str) and _SAFE_CODE.fullmatch(value) else None


def upstream_failure(status: int | None, *, code: object = None, type_: object = None,
                     param: object = None, text: object = None) -> str:
    """Our sentence for an upstream's error: `upstream answered 400 (context_length_exceeded,
    param: messages)`. `text` (the upstream's own message) is read for a context overflow,
    never copied."""
    name = safe_code(code) or safe_code(type_)
    if name != "context_length_exceeded" and isinstance(text, str) \
            and CONTEXT_OVERFLOW.search(text[:2000]):
        name = "context_length_exceeded"
    details = [name] if name else []
    if isinstance(param, str) and _SAFE_PARAM.fullmatch(param) \
            and not CONTEXT_OVERFLOW.search(param):  # a param must not read as an overflow
        details.append(f"param: {param}")
    head = f"upstream answered {status}" if status else "upstream failed"
    return head + (f" ({', '.join(details)})" if details else "")
