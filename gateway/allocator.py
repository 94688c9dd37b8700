"""The C allocator of a long-running `gateway serve`: few arenas, freed memory handed back.

glibc's malloc gives each thread that meets contention an arena of its own (up to 8 per
core) and keeps what is freed there for reuse. The event loop, the audit committer, the
SQLite connection threads and `to_thread` workers all allocate (bodies, rows, JSON), so
under sustained mixed load RSS kept creeping although Python's own heap was flat
(tracemalloc, `bench/soak.py --tracemalloc`). So, at start: at most `ARENAS` arenas (unless
`MALLOC_ARENA_MAX` is set, which glibc reads itself), and a thread that calls
`malloc_trim(0)` every `TRIM_EVERY_S` (it gives free pages of every arena back to the
system; a few milliseconds, off the event loop). Nothing happens where the C library is not
glibc (musl, macOS). Figures: bench/README.md "Memory under sustained load".
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("gateway.allocator")

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2
TRIM_EVERY_S = 60.0


def glibc() -> Any:
    """The C library when it is glibc (it has `mallopt` and `malloc_trim`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def tune(environ: Mapping[str, str] = os.environ, libc: Any = None,
         every_s: float = TRIM_EVERY_S) -> threading.Thread | None:
    """Limit the arenas and start the trimming thread; None (nothing done) without glibc."""
    libc = libc if libc is not None else glibc()
    if libc is None:
        return None
    if "MALLOC_ARENA_MAX" not in environ:
        libc.mallopt(M_ARENA_MAX, ARENAS)
    thread = threading.Thread(target=_trim_forever, args=(libc, every_s), daemon=True,
                              name="malloc-trim")
    thread.start()
    return thread


def _trim_forever(libc: Any, every_s: float) -> None:
    while True:
        time.sleep(every_s)
        try:
            libc.malloc_trim(0)
        except Exception:  # never expected; the process goes on without trimming
            log.exception("malloc_trim failed; no longer trimming")
            return
