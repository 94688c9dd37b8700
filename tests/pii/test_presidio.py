"""The optional Presidio detector is import-safe and fails closed when it is missing."""

from __future__ import annotations

import pytest

from gateway.pii import presidio
from gateway.pii.detectors import DetectorError, detect


def test_not_installed_here() -> None:
    assert presidio.available() is False


def test_person_without_presidio_fails_closed() -> None:
    with pytest.raises(DetectorError, match="presidio"):
        detect("Alice Smith lives in Paris", ("email", "person"))


def test_documented() -> None:
    doc = presidio.__doc__ or ""
    assert "pip install presidio-analyzer" in doc
    assert "github.com/explosion/spacy-models/releases" in doc
    assert "tens of milliseconds" in doc


def test_detect_maps_presidio_results(monkeypatch: pytest.MonkeyPatch) -> None:
    class Result:
        def __init__(self, entity_type: str, start: int, end: int) -> None:
            self.entity_type, self.start, self.end = entity_type, start, end

    class Engine:
        def analyze(self, text: str, entities: list[str], language: str,
                    score_threshold: float) -> list[Result]:
            assert entities == ["PERSON", "LOCATION"] and language == "en"
            return [Result("PERSON", 0, 11), Result("LOCATION", 21, 26)]

    detector = presidio.configure(model="en_core_web_sm")
    monkeypatch.setattr(detector, "load", lambda: Engine())
    monkeypatch.setattr(presidio, "available", lambda: True)
    text = "Alice Smith lives in Paris, mail alice@example.com"
    found = detect(text, ("email", "person", "location"))
    assert [(f.kind, text[f.start:f.end]) for f in found] == [
        ("person", "Alice Smith"), ("location", "Paris"), ("email", "alice@example.com")]
    presidio.configure()
