"""Closing async iterators that may already be broken: the one helper for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


async def aclose_quietly(iterator: AsyncIterator[Any] | Any) -> None:
    """Close `iterator` if it can be closed; its own failure must not mask the real one."""
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    with contextlib.suppress(Exception):
        await close()


def close_later(iterator: AsyncIterator[Any] | Any) -> None:
    """Close `iterator` in a task of its own (from a `finally` that may be cancelled)."""
    if getattr(iterator, "aclose", None) is not None:
        asyncio.get_running_loop().create_task(aclose_quietly(iterator))
