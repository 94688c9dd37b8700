"""UI sign-in sessions (in memory, per process) and the per-IP sign-in limiter.

The cookie carries only a random session id. The key is held in this process's memory so
that every page can call the JSON API in-process under the signed-in key's own identity
(same role checks, same team scoping, same audit of changes); it never reaches a cookie,
a page or a URL after the sign-in form.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SESSION_TTL_S = 8 * 3600
LOGIN_WINDOW_S = 300.0
LOGIN_MAX_FAILURES = 5
MAX_SESSIONS = 10_000


@dataclass
class Session:
    sid: str
    key: str = field(repr=False)
    key_id: str
    key_name: str
    role: str
    team: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    expires: float = field(default_factory=lambda: time.monotonic() + SESSION_TTL_S)


class SessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def create(self, key: str, key_id: str, key_name: str, role: str, team: str | None
               ) -> Session:
        self._prune()
        sid = secrets.token_urlsafe(32)
        session = Session(sid, key, key_id, key_name, role, team)
        self._sessions[sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires <= time.monotonic():
            self._sessions.pop(sid, None)
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _prune(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:  # oldest first (insertion order)
            del self._sessions[next(iter(self._sessions))]


class LoginLimiter:
    """At most `LOGIN_MAX_FAILURES` failed sign-ins per client IP in `LOGIN_WINDOW_S`;
    beyond that every attempt from the IP is refused (429) until the window moves on."""

    def __init__(self, max_failures: int = LOGIN_MAX_FAILURES,
                 window_s: float = LOGIN_WINDOW_S) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, ip: str) -> deque[float]:
        now = time.monotonic()
        q = self._failures.setdefault(ip, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def blocked(self, ip: str) -> bool:
        return len(self._recent(ip)) >= self.max_failures

    def retry_after(self, ip: str) -> int:
        q = self._recent(ip)
        return max(1, int(q[0] + self.window_s - time.monotonic()) + 1) if q else 1

    def failed(self, ip: str) -> None:
        if len(self._failures) > 100_000:
            self._failures.clear()
        self._recent(ip).append(time.monotonic())


def same(given: Any, expected: str | None) -> bool:
    """Constant-time token check (bytes: `compare_digest` refuses non-ASCII str)."""
    return isinstance(given, str) and bool(given) and bool(expected) and hmac.compare_digest(
        given.encode(), (expected or "").encode())


# One store per process (sessions live in memory: a replica restart signs everyone out).
sessions = SessionStore()
login_limiter = LoginLimiter()
