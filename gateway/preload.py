"""What the first requests would otherwise load, loaded at start (`GATEWAY_PRELOAD`, on).

Lazily, the first request that counts tokens for a model loads its tiktoken encoding (about
70 MB and 0.7 s for `o200k_base`, 30 MB and 0.2 s for `cl100k_base`, on the event loop) and
the first request to a model served through litellm imports litellm (about 150 MB, 2-3 s).
Under mixed traffic that was most of the RSS "growth after warm-up" `bench/soak.py` looks
for, and a first request that waited seconds. Loaded before the server answers (and before
the start-up objects are frozen out of the garbage collector's passes), the process starts
at its working size; tests that start many gateways turn it off for speed.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway import tokens

log = logging.getLogger("gateway.preload")


def needs(config: Any, translated: frozenset[str] | set[str]) -> tuple[list[str], bool]:
    """The tiktoken encodings the configured models count with, and whether any model is
    served through litellm."""
    names: set[str] = set()
    for name, model in config.models.items():
        names.add(tokens.encoding_name(name))
        for deployment in model.deployments:
            names.add(tokens.encoding_name(deployment.model))
    return sorted(names), bool(translated)


def preload(config: Any, translated: frozenset[str] | set[str]) -> list[str]:
    """Load them (blocking: run it in a thread); what was loaded."""
    encodings, litellm = needs(config, translated)
    for name in encodings:
        tokens._encoding(name)
    loaded = list(encodings)
    if litellm:
        from gateway.providers.litellm_adapter import _import_litellm

        _import_litellm()
        loaded.append("litellm")
    return loaded
