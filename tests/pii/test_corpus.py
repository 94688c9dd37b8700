"""Precision and recall per kind on the labelled corpus (`corpus.jsonl`, `make_corpus.py`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gateway.pii.detectors import BUILTIN_KINDS, detect
from tests.pii import make_corpus

CORPUS = Path(__file__).with_name("corpus.jsonl")
MINIMUM = 0.95


def _load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def test_corpus_is_what_the_script_generates() -> None:
    assert _load() == make_corpus.build(), "run: .venv/bin/python tests/pii/make_corpus.py"


def test_precision_and_recall_per_kind(capsys: pytest.CaptureFixture[str],
                                       record_property) -> None:
    samples = _load()
    assert len(samples) >= 300
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    misses: list[str] = []
    for sample in samples:
        text = sample["text"]
        gold = {(s["kind"], s["start"], s["end"]) for s in sample["spans"]}
        found = {(f.kind, f.start, f.end) for f in detect(text, BUILTIN_KINDS)}
        for kind, _, _ in found & gold:
            tp[kind] += 1
        for kind, start, end in found - gold:
            fp[kind] += 1
            misses.append(f"false {kind}: {text[start:end]!r} in {text[:80]!r}")
        for kind, start, end in gold - found:
            fn[kind] += 1
            misses.append(f"missed {kind}: {text[start:end]!r} in {text[:80]!r}")
    rows, scores = [], {}
    for kind in BUILTIN_KINDS:
        precision = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 1.0
        recall = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 1.0
        scores[kind] = (precision, recall)
        rows.append(f"  {kind:12s} precision {precision:6.3f}  recall {recall:6.3f}  "
                    f"(tp {tp[kind]}, fp {fp[kind]}, fn {fn[kind]})")
        record_property(f"pii_{kind}_precision", round(precision, 4))
        record_property(f"pii_{kind}_recall", round(recall, 4))
    report = "\n".join([f"\nPII corpus: {len(samples)} samples", *rows, *misses[:20]])
    print(report)
    with capsys.disabled():  # in the test output even without -s
        print(report)
    for kind, (precision, recall) in scores.items():
        assert precision >= MINIMUM and recall >= MINIMUM, (kind, precision, recall)
