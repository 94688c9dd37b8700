"""The text fields of one body, scanned together: a value split across fields is still seen.

`scan_texts(texts, rules, redactor, phase)` returns each text with the rules applied (None:
unchanged) and the findings per text. Two detector passes, whatever the number of fields:

1. The texts joined by a newline, a hard boundary no built-in detector matches across
   (PEM blocks aside: a key whose lines continue in the next field is one finding), so each
   text is scanned exactly as it would be alone, for the cost of one call.
2. The seams: the texts joined with nothing and with one space between them (texts longer
   than `2 * SEAM` characters cut to their first and last `SEAM`), keeping only findings
   that run from one text into the next: `4111 1111` + `1111 1111` in two messages,
   `bob@` + `example.com`. A seam finding that overlaps a finding of the first pass is
   dropped (the first pass wins).

A value found across texts is replaced as a whole: its placeholder (or mask, or hash) takes
the place of its first piece, and its other pieces become empty. It counts once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gateway.pii.actions import AppliedFinding, Phase, PiiBlockedError, Redactor
from gateway.pii.detectors import BUILTIN_KINDS, detect

SEAM = 128  # characters of each end of a text that the seam pass looks at
_ELIDED = "\n\n"  # stands for the middle of a long text in the seam pass: nothing crosses it

Piece = tuple[int, int, int]  # (text index, start, end): end exclusive, offsets in that text


class _Layout:
    """Pieces of texts laid end to end in one string, and the way back to each text."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.owners: list[int] = []  # the text index of each part; -1: a separator
        self.offsets: list[int] = []  # where each part starts in its text
        self.size = 0

    def add(self, part: str, owner: int = -1, offset: int = 0) -> None:
        if part:
            self.parts.append(part)
            self.starts.append(self.size)
            self.owners.append(owner)
            self.offsets.append(offset)
            self.size += len(part)

    def text(self) -> str:
        return "".join(self.parts)

    def pieces(self, start: int, end: int) -> list[Piece]:
        """The texts' pieces under `[start, end)` of the joined string, in order."""
        out = []
        i = bisect_right(self.starts, start) - 1
        while i < len(self.parts) and self.starts[i] < end:
            owner, base = self.owners[i], self.starts[i]
            if owner >= 0:
                s, e = max(start, base), min(end, base + len(self.parts[i]))
                if s < e:
                    s, e = s - base + self.offsets[i], e - base + self.offsets[i]
                    if out and out[-1][0] == owner and out[-1][2] == s:
                        out[-1] = (owner, out[-1][1], e)
                    else:
                        out.append((owner, s, e))
            i += 1
        return out


class _Value(NamedTuple):
    kind: str
    pieces: list[Piece]


def _joined_pass(texts: Sequence[str], kinds: tuple[str, ...]) -> list[_Value]:
    layout = _Layout()
    for i, text in enumerate(texts):
        if i:
            layout.add("\n")
        layout.add(text, i)
    return [_Value(f.kind, layout.pieces(f.start, f.end))
            for f in detect(layout.text(), kinds)]


def _seam_pass(texts: Sequence[str], kinds: tuple[str, ...]) -> list[_Value]:
    layout = _Layout()
    for joiner in ("", " "):
        layout.add(_ELIDED)
        for i, text in enumerate(texts):
            if not text:
                continue
            layout.add(joiner)
            if len(text) <= 2 * SEAM:
                layout.add(text, i)
            else:
                layout.add(text[:SEAM], i)
                layout.add(_ELIDED)
                layout.add(text[-SEAM:], i, len(text) - SEAM)
    found = []
    for f in detect(layout.text(), kinds):
        pieces = layout.pieces(f.start, f.end)
        if len({owner for owner, _, _ in pieces}) > 1:
            found.append(_Value(f.kind, pieces))
    return found


def _overlaps(value: _Value, taken: dict[int, list[tuple[int, int]]]) -> bool:
    return any(s < e2 and s2 < e for owner, s, e in value.pieces
               for s2, e2 in taken.get(owner, ()))


def find_values(texts: Sequence[str], kinds: tuple[str, ...]) -> list[_Value]:
    """Every value of `kinds` in `texts`, within one text or across several, in order."""
    values = _joined_pass(texts, kinds)
    if sum(1 for t in texts if t) > 1:
        seam_kinds = tuple(k for k in kinds if k in BUILTIN_KINDS)
        crossing = _seam_pass(texts, seam_kinds) if seam_kinds else []
        if crossing:
            taken: dict[int, list[tuple[int, int]]] = {}
            for value in values:
                for owner, s, e in value.pieces:
                    taken.setdefault(owner, []).append((s, e))
            crossing.sort(key=lambda v: -sum(e - s for _, s, e in v.pieces))
            for value in crossing:
                if not _overlaps(value, taken):
                    values.append(value)
                    for owner, s, e in value.pieces:
                        taken.setdefault(owner, []).append((s, e))
            values.sort(key=lambda v: v.pieces[0][:2])
    return values


def scan_texts(texts: Sequence[str], rules: Mapping[str, str], redactor: Redactor,
               phase: Phase = "input"
               ) -> tuple[list[str | None], list[list[AppliedFinding]]]:
    """Apply `rules` to the values in `texts` (see the module docstring).

    Returns the new texts (None: unchanged) and, per text, the findings with their
    offsets in that text (one per piece). Raises `PiiBlockedError` for a `block` kind
    (after recording what was found) and `DetectorError` when a detector fails.
    """
    per_text: list[list[AppliedFinding]] = [[] for _ in texts]
    if not rules or not any(texts):
        return [None] * len(texts), per_text
    values = find_values(texts, tuple(rules))
    if not values:
        return [None] * len(texts), per_text
    redactor.record(AppliedFinding(v.kind, v.pieces[0][1], v.pieces[-1][2], rules[v.kind])
                    for v in values)
    for v in values:
        if rules[v.kind] == "block":
            raise PiiBlockedError(v.kind, phase)
    restorable = phase == "input"
    if restorable:
        for text in texts:
            redactor.reserve_existing(text)
    edits: list[list[tuple[int, int, str]]] = [[] for _ in texts]
    for v in values:
        action = rules[v.kind]
        for owner, s, e in v.pieces:
            per_text[owner].append(AppliedFinding(v.kind, s, e, action))
        if action == "allow":
            continue
        original = "".join(texts[owner][s:e] for owner, s, e in v.pieces)
        replacement = redactor.replacement(v.kind, original, action, restorable=restorable)
        for n, (owner, s, e) in enumerate(v.pieces):
            edits[owner].append((s, e, replacement if n == 0 else ""))
    new_texts: list[str | None] = [None] * len(texts)
    for i, text_edits in enumerate(edits):
        if not text_edits:
            continue
        text_edits.sort()
        pieces, pos = [], 0
        for s, e, replacement in text_edits:
            pieces.append(texts[i][pos:s])
            pieces.append(replacement)
            pos = e
        pieces.append(texts[i][pos:])
        new_texts[i] = "".join(pieces)
    for found in per_text:
        found.sort(key=lambda f: f.start)
    return new_texts, per_text
