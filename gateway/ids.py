"""Identifiers and secrets."""

from __future__ import annotations

import hashlib
import os
import secrets
import time

KEY_SECRET_PREFIX = "sk-gw-"


def new_id(prefix: str) -> str:
    """A short random id such as `key_3f9c0a1b2c4d5e6f`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def time_ordered_id(ms: int | None = None) -> str:
    """24 hex chars: 48-bit milliseconds then 48 random bits; sorts by creation time."""
    if ms is None:
        ms = int(time.time() * 1000)
    return f"{ms:012x}{os.urandom(6).hex()}"


def new_key_secret() -> str:
    return KEY_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Keys are 256-bit random, so a plain SHA-256 is a safe one-way store."""
    return hashlib.sha256(secret.encode()).hexdigest()
