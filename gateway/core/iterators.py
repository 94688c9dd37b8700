"""Closing streams that may already be broken: the one helper for it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import Any


async def aclose_quietly(stream: Any) -> None:
    """Close `stream` (an async iterator, or anything with `aclose` or `close`, sync or
    async); its own failure must not mask the real one."""
    if stream is None:
        return
    for name in ("aclose", "close"):
        close = getattr(stream, name, None)
        if close is None:
            continue
        with contextlib.suppress(Exception):
            result = close()
            if inspect.isawaitable(result):
                await result
        return


def close_later(stream: Any) -> None:
    """Close `stream` in a task of its own (from a `finally` that may be cancelled)."""
    if getattr(stream, "aclose", None) is not None or getattr(stream, "close", None):
        asyncio.get_running_loop().create_task(aclose_quietly(stream))
