"""Loaded by the gateway process of `bench/soak.py --tracemalloc` (put first on PYTHONPATH).

With `SOAK_TRACEMALLOC_DIR` set: starts tracemalloc (6 frames) at interpreter start and,
from a daemon thread, dumps a snapshot there at each of the times in `SOAK_TRACEMALLOC_AT_S`
(seconds after start, comma-separated: `snap-0001.pickle`, ...), so the soak can compare
what Python objects grew between two points. Without the variable it does nothing. Not
part of the gateway.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

_DIR = os.environ.get("SOAK_TRACEMALLOC_DIR")


def _dump(directory: str, at_s: list[float]) -> None:
    start = time.monotonic()
    for n, at in enumerate(sorted(at_s), 1):
        time.sleep(max(0.0, start + at - time.monotonic()))
        tracemalloc.take_snapshot().dump(os.path.join(directory, f"snap-{n:04d}.pickle"))


if _DIR:
    tracemalloc.start(6)
    times = [float(t) for t in os.environ.get("SOAK_TRACEMALLOC_AT_S", "").split(",") if t]
    threading.Thread(target=_dump, args=(_DIR, times), name="soak-tracemalloc",
                     daemon=True).start()
