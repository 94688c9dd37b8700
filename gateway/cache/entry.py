"""A stored answer: the upstream's answer in redacted form (placeholders, never the
caller's PII) with where it came from, its usage and what it cost."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

VERSION = 1


@dataclass(slots=True)
class Entry:
    created_ms: int
    source_request_id: str
    model_served: str | None
    deployment: str | None
    usage: dict[str, Any] | None
    usage_source: str
    cost_nanos: int | None
    answer: dict[str, Any]

    def age_s(self, now_ms: int | None = None) -> int:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0, (now - self.created_ms) // 1000)


def encode(*, answer: bytes, source_request_id: str, model_served: str | None,
           deployment: str | None, usage: dict[str, Any] | None, usage_source: str,
           cost_nanos: int | None) -> bytes:
    """`answer` is already JSON (serialised when the answer arrived, before anything later
    in the chain could change it)."""
    return orjson.dumps({"v": VERSION, "t": int(time.time() * 1000), "r": source_request_id,
                         "m": model_served, "d": deployment, "u": usage, "s": usage_source,
                         "c": cost_nanos, "a": orjson.Fragment(answer)})


def decode(raw: bytes) -> Entry | None:
    """The entry, or None for anything this version did not write."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION \
            or not isinstance(data.get("a"), dict):
        return None
    usage = data.get("u")
    return Entry(int(data.get("t") or 0), str(data.get("r") or ""), data.get("m"),
                 data.get("d"), usage if isinstance(usage, dict) else None,
                 str(data.get("s") or "provider"), data.get("c"), data["a"])
