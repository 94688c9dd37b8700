"""Identifiers and secrets."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time

KEY_SECRET_PREFIX = "sk-gw-"


class _RandomBytes:
    """Bytes from `os.urandom`, read 4 KiB at a time. A request makes three ids, and each
    `os.urandom` call released the GIL: on the event loop's thread that handed the GIL to the
    audit threads, and the loop waited for it back (up to a switch interval, 5 ms) three
    times per request. A forked worker starts with a buffer of its own."""

    SIZE = 4096

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            at = self._at
            if at + n > len(self._buffer):
                self._buffer, at = os.urandom(max(self.SIZE, n)), 0
            self._at = at + n
            return self._buffer[at:at + n]


_RANDOM = _RandomBytes()
os.register_at_fork(after_in_child=_RANDOM.reset)


def random_hex(n_bytes: int) -> str:
    """`2 * n_bytes` random hex digits (never the same bytes twice, in any process)."""
    return _RANDOM.take(n_bytes).hex()


def new_id(prefix: str) -> str:
    """A short random id such as `key_3f9c0a1b2c4d5e6f`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def time_ordered_id(ms: int | None = None) -> str:
    """24 hex chars: 48-bit milliseconds then 48 random bits; sorts by creation time."""
    if ms is None:
        ms = int(time.time() * 1000)
    return f"{ms:012x}{random_hex(6)}"


def new_key_secret() -> str:
    return KEY_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Keys are 256-bit random, so a plain SHA-256 is a safe one-way store."""
    return hashlib.sha256(secret.encode()).hexdigest()
