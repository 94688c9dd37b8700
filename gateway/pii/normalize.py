"""The text the detectors see: NFKC per character, invisible characters removed.

Full-width digits (U+FF10..U+FF19), ideographic and no-break spaces and similar compatibility
forms become their plain ASCII selves, and zero-width characters (U+200B/C/D, U+2060,
U+FEFF, the soft hyphen, ...) are dropped, so `bob\u200b@example.com` is seen as an email.
Detectors run on the normalised text; `Normalized.span` maps their spans back to the
ORIGINAL text, so what is replaced is always the original characters.

Normalisation is per character (not whole-string NFKC, which would also compose
combining sequences): it is context-free, so normalising a prefix gives a prefix of
normalising the whole, which the stream scanner relies on.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

# Invisible characters that can be slipped inside a value to hide it from a regex.
INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
_INVISIBLE_SET = frozenset(INVISIBLE)
_CHAR_CACHE: dict[str, str] = {}


def _norm_char(ch: str) -> str:
    out = _CHAR_CACHE.get(ch)
    if out is None:
        out = "" if ch in _INVISIBLE_SET else unicodedata.normalize("NFKC", ch)
        if len(_CHAR_CACHE) < 200_000:
            _CHAR_CACHE[ch] = out
    return out


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised text plus the map back to the original.

    The map lists the characters that change the length, in order: `_orig[t]` is the
    original index of the t-th such character, `_norm[t]` where its output starts in the
    normalised text and `_width[t]` how long that output is (0: dropped). Every other
    character maps one to one. Empty lists: the offsets are the same in both texts.
    """

    text: str
    original: str
    _orig: tuple[int, ...] = ()
    _norm: tuple[int, ...] = ()
    _width: tuple[int, ...] = ()

    @property
    def is_identity(self) -> bool:
        """Whether offsets are the same in both texts."""
        return not self._orig

    def orig_index(self, i: int) -> int:
        """The original index of normalised character `i`."""
        t = bisect_right(self._norm, i) - 1
        if t < 0:
            return i
        start, width = self._norm[t], self._width[t]
        if i < start + width:
            return self._orig[t]  # inside an expansion: its one original character
        return self._orig[t] + 1 + (i - start - width)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalised `[start, end)` (end exclusive, non-empty) to the original."""
        if not self._orig:
            return start, end
        return self.orig_index(start), self.orig_index(end - 1) + 1


def normalize(text: str) -> Normalized:
    """Normalise `text` for detection. Pure ASCII text is returned as is (no copy).

    Linear in the text: one `str.translate` for the characters, and a Python step only
    per character that is dropped or expands to several.
    """
    if text.isascii() or (unicodedata.is_normalized("NFKC", text)
                          and not any(ch in text for ch in INVISIBLE)):
        return Normalized(text, text)
    table: dict[int, str | None] = {}
    widths: dict[str, int] = {}  # characters that change the length: dropped or expanded
    for ch in set(text):
        if ch > "\x7f":
            out = _norm_char(ch)
            if out != ch:
                table[ord(ch)] = out or None
                if len(out) != 1:
                    widths[ch] = len(out)
    if not table:
        return Normalized(text, text)
    norm = text.translate(table)
    if not widths:
        return Normalized(norm, text)  # one to one: offsets are unchanged
    shifting = re.compile("[" + "".join(re.escape(c) for c in sorted(widths)) + "]")
    hits = [(m.start(), widths[m.group()]) for m in shifting.finditer(text)]
    orig = [p for p, _ in hits]
    width = [w for _, w in hits]
    starts = []
    shift = 0
    for p, w in hits:
        starts.append(p + shift)
        shift += w - 1
    return Normalized(norm, text, tuple(orig), tuple(starts), tuple(width))
