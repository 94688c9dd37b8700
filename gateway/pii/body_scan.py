"""The text fields of one body, scanned together: a value split across fields is still seen.

`scan_texts(texts, rules, redactor, phase)` returns each text with the rules applied (None:
unchanged) and the findings per text. One detector call over two regions, whatever the number
of fields:

1. The texts joined by a newline, a hard boundary no built-in detector matches across
   (PEM blocks aside: a key whose lines continue in the next field is one finding), so each
   text is scanned exactly as it would be alone, for the cost of one call.
2. The seams: neighbouring texts joined with nothing and with one space between them,
   keeping only findings that run from one text into the next: `4111 1111` + `1111 1111`
   in two messages, `bob@` + `example.com`. Only the `SEAM` characters on each side of a
   seam are looked at (a short text in the middle of a chain whole), and only seams a value
   may cross (`_may_cross`: digits on both sides, an `@`, a key's prefix), so prose pays
   nothing for this. `groups` keeps
   seams inside a group (a stored request and its answer are not one text). A seam
   finding that overlaps a finding of the first pass is dropped (the first pass wins).

A value found across texts is replaced as a whole: its placeholder (or mask, or hash) takes
the place of its first piece, and its other pieces become empty. It counts once.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gateway.pii.actions import AppliedFinding, Phase, PiiBlockedError, Redactor
from gateway.pii.detectors import detect

SEAM = 64  # characters on each side of a seam that the seam pass looks at
_ELIDED = "\n\n"  # separates seam chains, and the middle of a long text: nothing crosses it
_DIGIT = re.compile("[0-9]")
_KEY_HINT = re.compile(r"(?<![A-Za-z0-9])(?:sk[-_]|rk_|AKIA|ASIA|gh[pousr]_|github_pat_|xox"
                       r"|AIza|eyJ)|ecret|ECRET")
_EMAIL_EDGE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@")
_KEY_EDGE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _may_cross(a: str, b: str) -> bool:
    """Whether a value may run from the end of `a` into the start of `b`: what the kinds'
    values have on both sides of the seam (digits near it; an `@` and address characters;
    a key's prefix and key characters). Non-ASCII near the seam may fold to any of them."""
    if not (a[-8:] + b[:8]).isascii():
        return True
    if _DIGIT.search(a, len(a) - 4) and _DIGIT.search(b, 0, 4):
        return True
    last, first = a[-1], b[0]
    if last in _EMAIL_EDGE and first in _EMAIL_EDGE and \
            ("@" in a[-SEAM:] or "@" in b[:SEAM]):
        return True
    return first in _KEY_EDGE and (last in _KEY_EDGE or last in "=:\"' ") and \
        (_KEY_HINT.search(a, max(0, len(a) - SEAM)) or _KEY_HINT.search(b, 0, SEAM)) \
        is not None


Piece = tuple[int, int, int]  # (text index, start, end): end exclusive, offsets in that text


class _Layout:
    """Texts laid end to end in one string, and the way back from it to each text: first the
    texts joined by newlines, then what `add` appends (seams)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.chunks = ["\n".join(texts)]
        self.parts: list[str] = []  # the pieces of texts, in order (separators are not)
        self.starts: list[int] = []  # where each piece starts in the joined string
        self.owners: list[int] = []  # the text index of each piece
        self.offsets: list[int] = []  # where each piece starts in its text
        pos = 0
        for i, text in enumerate(texts):
            if text:
                self.parts.append(text)
                self.starts.append(pos)
                self.owners.append(i)
                self.offsets.append(0)
            pos += len(text) + 1
        self.size = len(self.chunks[0])

    def add(self, part: str, owner: int = -1, offset: int = 0) -> None:
        """Append `part`: a piece of text `owner` starting at `offset`, or (-1) a separator."""
        if part:
            self.chunks.append(part)
            if owner >= 0:
                self.parts.append(part)
                self.starts.append(self.size)
                self.owners.append(owner)
                self.offsets.append(offset)
            self.size += len(part)

    def text(self) -> str:
        return "".join(self.chunks)

    def pieces(self, start: int, end: int) -> list[Piece]:
        """The texts' pieces under `[start, end)` of the joined string, in order."""
        out: list[Piece] = []
        i = max(0, bisect_right(self.starts, start) - 1)
        while i < len(self.parts) and self.starts[i] < end:
            owner, base = self.owners[i], self.starts[i]
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


def _chains(texts: Sequence[str], groups: Sequence[int] | None) -> list[list[int]]:
    """Runs of neighbouring non-empty texts whose seams a value may cross."""
    chains: list[list[int]] = []
    current: list[int] = []
    for i, text in enumerate(texts):
        if not text:
            continue
        if current and (groups is None or groups[current[-1]] == groups[i]) and \
                _may_cross(texts[current[-1]], text):
            current.append(i)
            continue
        if len(current) > 1:
            chains.append(current)
        current = [i]
    if len(current) > 1:
        chains.append(current)
    return chains


def _layout(texts: Sequence[str], groups: Sequence[int] | None) -> tuple[_Layout, int]:
    """The texts joined by newlines, then their seams; and where the seams start."""
    layout = _Layout(texts)
    seams = layout.size
    for chain in _chains(texts, groups):
        for joiner in ("", " "):
            layout.add(_ELIDED)
            for n, i in enumerate(chain):
                text = texts[i]
                if n == 0:
                    layout.add(text[-SEAM:], i, max(0, len(text) - SEAM))
                    continue
                layout.add(joiner)
                if n == len(chain) - 1:
                    layout.add(text[:SEAM], i)
                elif len(text) <= 2 * SEAM:
                    layout.add(text, i)
                else:
                    layout.add(text[:SEAM], i)
                    layout.add(_ELIDED)
                    layout.add(text[-SEAM:], i, len(text) - SEAM)
    return layout, seams


def _overlaps(value: _Value, taken: dict[int, list[tuple[int, int]]]) -> bool:
    return any(s < e2 and s2 < e for owner, s, e in value.pieces
               for s2, e2 in taken.get(owner, ()))


def find_values(texts: Sequence[str], kinds: tuple[str, ...],
                groups: Sequence[int] | None = None) -> list[_Value]:
    """Every value of `kinds` in `texts`, within one text or across several, in order."""
    layout, seams = _layout(texts, groups)
    values, crossing = [], []
    for f in detect(layout.text(), kinds):  # one call: its fixed cost is most of a small body's
        if f.start < seams:
            values.append(_Value(f.kind, layout.pieces(f.start, min(f.end, seams))))
        else:
            pieces = layout.pieces(f.start, f.end)
            if len({owner for owner, _, _ in pieces}) > 1:
                crossing.append(_Value(f.kind, pieces))
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
               phase: Phase = "input", groups: Sequence[int] | None = None
               ) -> tuple[list[str | None], list[list[AppliedFinding]]]:
    """Apply `rules` to the values in `texts` (see the module docstring).

    Returns the new texts (None: unchanged) and, per text, the findings with their
    offsets in that text (one per piece). Raises `PiiBlockedError` for a `block` kind
    (after recording what was found) and `DetectorError` when a detector fails.
    """
    per_text: list[list[AppliedFinding]] = [[] for _ in texts]
    if not rules or not any(texts):
        return [None] * len(texts), per_text
    values = find_values(texts, tuple(rules), groups)
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
