"""litellm's bundled data files (price map, tiktoken encodings), found without importing litellm.

`import litellm` costs ~2 s and ~180 MB; the files we need are plain data in its wheel.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"
TOKENIZER_SUBDIR = Path("litellm_core_utils") / "tokenizers"


@cache
def litellm_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def price_map_path(override: Path | None = None) -> Path | None:
    base = override or litellm_dir()
    if base is None:
        return None
    path = base / PRICE_MAP_FILE
    return path if path.is_file() else None


def use_offline_tiktoken(override: Path | None = None) -> None:
    """Point tiktoken at the encodings shipped in litellm's wheel (tiktoken fetches otherwise).

    Also tells litellm (if a deployment ever imports it) to use its bundled price map.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return
    base = override or litellm_dir()
    if base is not None and (base / TOKENIZER_SUBDIR).is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(base / TOKENIZER_SUBDIR)
