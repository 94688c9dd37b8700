"""Optional `person` and `location` detection through Microsoft Presidio.

The built-in detectors find values with a fixed shape; names of people and places need a
named-entity model. When `presidio_analyzer` is installed, the kinds `person` and
`location` can be used in a policy's `pii` rules; when it is not, `available()` is False,
a policy that names them is refused at start, and nothing here is imported.

Install (into the gateway's virtualenv)::

    pip install presidio-analyzer
    python -m spacy download en_core_web_lg

`spacy download` fetches the model from spaCy's own release page
(https://github.com/explosion/spacy-models/releases); to pin it, install that wheel by
URL, e.g. `pip install https://github.com/explosion/spacy-models/releases/download/
en_core_web_lg-3.8.0/en_core_web_lg-3.8.0-py3-none-any.whl`. spaCy models are NOT
published on PyPI: a package there named like `en-core-web-lg` is not spaCy's, so never
`pip install en-core-web-*` from PyPI. Pick another model with `configure(model=...)`
(`en_core_web_sm` is smaller and faster, `en_core_web_trf` more accurate and slower).

Cost: loading the model takes seconds and several hundred MB of memory (done once, on
first use or at start through `load()`), and every scanned request pays the model's
inference, typically tens of milliseconds for a chat-sized text on one core (more for long
texts and transformer models), against well under a millisecond for the built-in
detectors. In streamed output only line breaks are treated as safe boundaries while these
kinds are on, because names span spaces.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Collection
from typing import Any

# Presidio entity -> our kind
ENTITIES = {"PERSON": "person", "LOCATION": "location"}


def available() -> bool:
    """Whether presidio_analyzer is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("presidio_analyzer") is not None
    except (ImportError, ValueError):
        return False


class PresidioDetector:
    """A lazily built Presidio analyzer for one spaCy model."""

    def __init__(self, model: str = "en_core_web_lg", language: str = "en",
                 score: float = 0.6) -> None:
        self.model, self.language, self.score = model, language, score
        self._engine: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        """Build (once) and return the analyzer; call at start to pay the load time early."""
        with self._lock:
            if self._engine is None:
                from presidio_analyzer import AnalyzerEngine
                from presidio_analyzer.nlp_engine import NlpEngineProvider

                provider = NlpEngineProvider(nlp_configuration={
                    "nlp_engine_name": "spacy",
                    "models": [{"lang_code": self.language, "model_name": self.model}],
                })
                self._engine = AnalyzerEngine(nlp_engine=provider.create_engine(),
                                              supported_languages=[self.language])
            return self._engine

    def detect(self, text: str, kinds: Collection[str]) -> list[tuple[str, int, int]]:
        """`(kind, start, end)` of the `person` / `location` entities in `text`."""
        wanted = [entity for entity, kind in ENTITIES.items() if kind in kinds]
        if not wanted or not text:
            return []
        results = self.load().analyze(text=text, entities=wanted, language=self.language,
                                      score_threshold=self.score)
        return [(ENTITIES[r.entity_type], r.start, r.end) for r in results
                if r.entity_type in ENTITIES]


_default = [PresidioDetector()]


def configure(*, model: str = "en_core_web_lg", language: str = "en",
              score: float = 0.6) -> PresidioDetector:
    """Use this model, language and minimum score from now on (before the first request)."""
    _default[0] = PresidioDetector(model, language, score)
    return _default[0]


def load() -> Any:
    return _default[0].load()


def detect(text: str, kinds: Collection[str]) -> list[tuple[str, int, int]]:
    return _default[0].detect(text, kinds)
