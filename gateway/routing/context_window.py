"""Context-window errors and the fallback that can take a longer input.

Each public model's window is the smallest `max_input_tokens` its deployments have in
litellm's price map (read as a file, litellm is not imported); unknown for models the map
does not list. A request that overflows a model skips to the first model in its `fallbacks`
whose window is known and larger.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from gateway.config import LoadedConfig
from gateway.providers.base import ProviderError
from gateway.providers.summary import CONTEXT_OVERFLOW

_CLIENT_STATUSES = frozenset({400, 413, 422})


def is_context_error(exc: ProviderError) -> bool:
    return (exc.status in _CLIENT_STATUSES or exc.status is None) \
        and CONTEXT_OVERFLOW.search(exc.message) is not None


def _window(table: dict, *names: str) -> int | None:
    for name in names:
        entry = table.get(name)
        if isinstance(entry, dict):
            value = entry.get("max_input_tokens") or entry.get("max_tokens")
            if isinstance(value, int | float) and value > 0:
                return int(value)
    return None


def context_windows(config: LoadedConfig, price_map: Path | None) -> dict[str, int | None]:
    """Public model name -> its context window in tokens (None: unknown)."""
    if price_map is None or not any(m.fallbacks for m in config.models.values()):
        return {}
    try:
        table = orjson.loads(price_map.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    out: dict[str, int | None] = {}
    for model in config.models.values():
        sizes = [_window(table, d.model, d.upstream_model) for d in model.deployments]
        known = [s for s in sizes if s is not None]
        out[model.name] = min(known) if known and len(known) == len(sizes) else None
    return out


def larger_fallback(windows: dict[str, int | None], chain: list[str], than: str
                    ) -> int | None:
    """Index in `chain` of the first model whose window is known and larger than `than`'s."""
    current = windows.get(than)
    for i, name in enumerate(chain):
        size = windows.get(name)
        if size is not None and (current is None or size > current):
            return i
    return None
