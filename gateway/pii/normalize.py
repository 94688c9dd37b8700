"""The text the detectors see: each character folded to the plain form a regex expects.

Per character, in this order:
- format characters (category Cf: zero-width spaces and joiners, bidi marks and isolates,
  the soft hyphen, tags, ...) and combining marks (Mn, Me: variation selectors, the
  combining grapheme joiner, accents) are dropped, so `bob\u200e@example.com` and
  `4111\u200e1111\u200e1111\u200e1111` are seen whole;
- NFKC: full-width forms, ideographic and no-break spaces and the like become their plain
  selves;
- any decimal digit (category Nd: Arabic-Indic, Devanagari, full-width, ...) becomes its
  ASCII digit (`unicodedata.digit`);
- any dash (category Pd) and the minus signs become `-`, so `219\u201009\u20109999` is an
  SSN;
- the common Cyrillic and Greek look-alikes of Latin letters (`CONFUSABLES`) become those
  letters, so `b\u043eb@ex\u0430mple.com` is an email.

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

DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
# Minus signs that are not in category Pd (U+207B/U+208B become U+2212 under NFKC).
MINUS_SIGNS = frozenset("\u2212\u02d7\u2796")
# Cyrillic and Greek letters drawn like Latin ones, as a spoofer would pick them.
CONFUSABLES = {
    # Cyrillic
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0443": "y",
    "\u0445": "x", "\u0455": "s", "\u0456": "i", "\u0458": "j", "\u04bb": "h", "\u0501": "d",
    "\u051b": "q", "\u051d": "w", "\u04af": "y",
    "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H",
    "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0423": "Y", "\u0425": "X",
    "\u0405": "S", "\u0406": "I", "\u0408": "J", "\u04ae": "Y", "\u051a": "Q", "\u051c": "W",
    # Greek
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I",
    "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T",
    "\u03a5": "Y", "\u03a7": "X",
    "\u03b1": "a", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03bf": "o", "\u03c1": "p",
    "\u03c5": "u", "\u03c7": "x", "\u03f2": "c", "\u03f3": "j",
    # Latin without its dot
    "\u0131": "i", "\u0237": "j",
}
_CHAR_CACHE: dict[str, str] = {}
# Removing the ASCII runs first makes finding the distinct other characters 5x faster on
# mostly-ASCII text than `set(text)`.
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")


def _fold(ch: str) -> str:
    """One character of NFKC output folded: digit, dash or look-alike; dropped if invisible."""
    category = unicodedata.category(ch)
    if category in DROPPED_CATEGORIES:
        return ""
    if category == "Nd":
        return str(unicodedata.digit(ch))
    if category == "Pd" or ch in MINUS_SIGNS:
        return "-"
    return CONFUSABLES.get(ch, ch)


def _norm_char(ch: str) -> str:
    out = _CHAR_CACHE.get(ch)
    if out is None:
        if unicodedata.category(ch) in DROPPED_CATEGORIES:
            out = ""
        else:
            out = "".join(_fold(c) if c > "\x7f" else c
                          for c in unicodedata.normalize("NFKC", ch))
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


def _positions(text: str, chars: dict[str, int]) -> list[tuple[int, int]]:
    """`(index, width)` of every occurrence of `chars` in `text`, in order (`str.find`
    per occurrence: a C scan, no regex built per call)."""
    hits = []
    for ch, width in chars.items():
        i = text.find(ch)
        while i >= 0:
            hits.append((i, width))
            i = text.find(ch, i + 1)
    hits.sort()
    return hits


def normalize(text: str) -> Normalized:
    """Normalise `text` for detection. Pure ASCII text is returned as is (no copy).

    Linear in the text: one `str.translate` for the characters, and a Python step only
    per distinct non-ASCII character and per character that is dropped or expands.
    """
    if text.isascii():
        return Normalized(text, text)
    table: dict[int, str | None] = {}
    widths: dict[str, int] = {}  # characters that change the length: dropped or expanded
    for ch in set(_ASCII_RUNS.sub("", text)):  # the distinct non-ASCII characters
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
    hits = _positions(text, widths)
    starts = []
    shift = 0
    for p, w in hits:
        starts.append(p + shift)
        shift += w - 1
    return Normalized(norm, text, tuple(p for p, _ in hits), tuple(starts),
                      tuple(w for _, w in hits))
