"""Short, safe summaries of upstream failures: what a client or a log line may see.

An upstream's error text can echo a (masked) API key, a bearer token, its own URL with
credentials in it, or a stack trace. `scrub` keeps the first line, cuts it to a few hundred
characters and replaces anything that looks like a secret, a URL or a host address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CHARS = 300

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
