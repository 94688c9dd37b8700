"""Progress of a long command on a terminal: one line on stderr, rewritten in place.

Only when stderr is a terminal (never in a pipe, a file or CI logs), and at most ~10 times a
second, so a fast run shows nothing but the final line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_EVERY_S = 0.1


class Progress:
    def __init__(self, verb: str, total: int | None = None, *, unit: str = "events",
                 stream: TextIO | None = None) -> None:
        self.verb = verb
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.count = 0
        self.enabled = self.stream.isatty()
        self._shown_at = 0.0
        self._shown = False

    def step(self, n: int = 1) -> None:
        self.update(self.count + n)

    def update(self, count: int) -> None:
        self.count = count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown_at >= _EVERY_S:
            self._shown_at = now
            self._write()

    def _write(self) -> None:
        of = f" of {self.total:,}" if self.total is not None else ""
        self.stream.write(f"\r{self.verb} {self.count:,}{of} {self.unit}…")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        """End the line (only if one was shown)."""
        if self.enabled and self._shown:
            self._write()
            self.stream.write("\n")
            self.stream.flush()
