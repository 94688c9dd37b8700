"""Putting originals back (`restore: true`) and scanning the model's output, also in streams.

`restore(text, redactor)` replaces the placeholders this request minted for its INPUT with
the original values; placeholders it does not know (or minted for output) stay as they are.

`StreamRestorer` does the same over a stream: `feed(chunk)` returns the text that is safe
to send now, `flush()` the rest. It holds back only a suffix that is a proper prefix of a
placeholder of this request (at most `MAX_PLACEHOLDER_LEN - 1` characters, e.g. `[CREDIT_CA`
while `[CREDIT_CARD_1]` may follow), so the first token is not delayed beyond that. Any
chunking gives exactly `restore(whole text)`.

`StreamScanner` redacts / masks / hashes PII in an output stream. It holds back only the
open tail (`holdback.py`): the text from where a finding may still begin or be looked at by
a detector, bounded by the longest match of the kinds scanned (`holdback.MAX_TAIL`). The rest
is scanned and sent with the chunk that completed it:

- with the default output rules (credit_card, secret) ordinary words are sent at once; a
  number, or a word that may begin a key (`sk`, `gh`, `AKIA`), waits for the character that
  rules it out; with `email` a trailing word waits for a character that cannot be in an
  address (a space after `Hello`);
- a cut never falls inside a detector's candidate (overlapping candidates included), so the
  overlap resolution before the cut is the one-shot one;
- from the start of an unterminated `-----BEGIN ... PRIVATE KEY-----` it holds until the END
  line arrives or `PEM_MAX` (16 KiB) characters have passed;
- with `person` / `location` rules (names span spaces; the model reads context) whole lines
  are held, and a line longer than `MAX_HOLD` (12 KiB) is cut by force `MAX_TOKEN_LEN`
  (6 KiB) before its end, never inside a finding.

Each emitted segment is detected with what was sent before it back to its last hard boundary
(whitespace no finding contains, `detectors.is_soft_space`; at most `_CONTEXT`, 256
characters: lookbehinds, an email's local part, `secret_access_key =` before its value) and
with all that is held after it, so the output equals `scan(whole text)` for any chunking,
except where a chain of overlapping candidates outgrows `holdback.max_held` (text such as
`a@b.cc@b.cc@...`) or a line of more than 12 KiB under `person` / `location` rules.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.pii.actions import (
    PLACEHOLDER,
    AppliedFinding,
    Phase,
    Redactor,
    apply,
)
from gateway.pii.detectors import (
    MAX_TOKEN_LEN,
    NER_KINDS,
    PEM_MAX,
    DetectorError,
    Finding,
    detect_normalized,
    is_soft_space,
    pem_blocks,
    resolve_overlaps,
)
from gateway.pii.holdback import max_held, open_tail_start
from gateway.pii.normalize import Normalized, normalize

MAX_HOLD = 2 * MAX_TOKEN_LEN  # person / location rules: the longest line held whole
# At most this much of what was sent is kept as context (when no hard boundary is nearer):
# more than an email's local part (65) or a chain of digit candidates (a phone: ~115) reach.
_CONTEXT = 256


def restore(text: str, redactor: Redactor) -> str:
    """`text` with this request's input placeholders replaced by their original values."""
    if "[" not in text or not redactor.restorable:
        return text
    return PLACEHOLDER.sub(lambda m: redactor.original(m.group()) or m.group(), text)


class StreamRestorer:
    """`restore` over a stream of chunks; holds back at most one partial placeholder."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        self._held = ""
        i = text.rfind("[")
        if i >= 0 and self.redactor.could_start_placeholder(text[i:]):
            text, self._held = text[:i], text[i:]
        return restore(text, self.redactor)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return restore(text, self.redactor)


class StreamScanner:
    """Output PII scanning over a stream of chunks (see the module docstring for the window).

    `feed(chunk)` returns the text safe to send now (already redacted), `flush()` the rest.
    Raises `PiiBlockedError` when a `block` kind appears. `findings` holds what was found,
    with offsets in the whole original output; `held` is what is waiting.
    """

    def __init__(self, rules: Mapping[str, str], redactor: Redactor | None = None, *,
                 phase: Phase = "output") -> None:
        self.rules = dict(rules)
        self.kinds = tuple(self.rules)
        self.redactor = redactor if redactor is not None else Redactor()
        self.phase: Phase = phase
        self.findings: list[AppliedFinding] = []
        self._buf = ""  # original text not emitted yet
        self._ctx = ""  # the last emitted original characters
        self._ctx_norm = 0  # len(normalize(self._ctx).text)
        self._offset = 0  # stream offset of _buf[0]
        self._ner = any(k in NER_KINDS for k in self.rules)
        self._limit = max_held(self.kinds)

    @property
    def held(self) -> str:
        return self._buf

    def feed(self, chunk: str) -> str:
        if not self.rules:
            return chunk
        if not chunk:
            return ""
        self._buf += chunk
        return self._release(final=False)

    def flush(self) -> str:
        if not self._buf:
            return ""
        return self._release(final=True)

    # -- internals -------------------------------------------------------------------
    def _release(self, *, final: bool) -> str:
        """Scan and emit what can be sent: everything when `final`, else up to the open tail."""
        window = self._ctx + self._buf
        norm = normalize(window)
        text, shift = norm.text, self._ctx_norm
        tail = len(text) if final else self._open_start(text, shift)
        if tail == shift and not final:
            return ""
        candidates = self._candidates(text)
        cut = _settle(norm, candidates, shift, tail)
        found = None
        if len(window) - _original(norm, cut) > self._limit:
            # only a chain of overlapping candidates holds this much: cut anyway
            found = resolve_overlaps(f for f in candidates if f.start >= shift)
            cut = _settle(norm, found, shift, tail)
        if cut == shift and not final:
            return ""
        if found is None:
            found = resolve_overlaps(f for f in candidates if shift <= f.start and f.end <= cut)
        base = len(self._ctx)
        findings = []
        for f in found:
            if f.end <= cut:
                start, stop = norm.span(f.start, f.end)
                findings.append(Finding(f.kind, start - base, stop - base))
        sent = self._emit(_original(norm, cut) - base, findings)
        self._keep_context(norm, cut)
        return sent

    def _open_start(self, text: str, shift: int) -> int:
        """Where the text that must wait begins (normalised index, at least `shift`)."""
        cut = open_tail_start(text, shift, self.kinds)
        if "secret" in self.rules and "-----BEGIN " in text:
            for start, _, closed in pem_blocks(text, shift):
                if not closed and len(text) - start < PEM_MAX:
                    cut = min(cut, start)  # until its END line (or PEM_MAX)
                    break
        if self._ner:  # whole lines, or a forced cut in a very long one
            line = max(shift, text.rfind("\n") + 1, text.rfind("\r") + 1)
            if len(text) - line > MAX_HOLD:
                line = len(text) - MAX_TOKEN_LEN
            cut = min(cut, line)
        return cut

    def _keep_context(self, norm: Normalized, cut: int) -> None:
        """What the next segments are detected with: the text sent last, from its last hard
        boundary on (no finding contains one, and no detector looks across it), at most
        `_CONTEXT` characters; all of those with person / location rules."""
        text = norm.text
        end = _original(norm, cut)
        start = max(0, end - _CONTEXT)
        if not self._ner:
            low = max(0, cut - _CONTEXT)
            hard = max(text.rfind("\n", low, cut), text.rfind("\r", low, cut),
                       text.rfind("\t", low, cut))
            k = text.rfind(" ", low, cut - 1)  # a space before the cut, its next char known
            while k > hard:
                if not is_soft_space(text[k - 1] if k else "", text[k + 1]):
                    hard = k
                    break
                k = text.rfind(" ", low, k)
            if hard >= 0:
                start = max(start, norm.orig_index(hard))
        self._ctx = norm.original[start:end]
        self._ctx_norm = len(self._ctx) if norm.is_identity else len(normalize(self._ctx).text)

    def _candidates(self, text: str) -> list[Finding]:
        """Every detector candidate in `text`, overlaps not resolved (fail closed)."""
        try:
            return detect_normalized(text, self.kinds)
        except DetectorError:
            raise
        except Exception as exc:
            raise DetectorError(f"a PII detector failed ({type(exc).__name__})") from None

    def _emit(self, cut: int, findings: list[Finding]) -> str:
        segment = self._buf[:cut]
        result = apply(segment, findings, self.rules, self.redactor, self.phase)
        self.findings.extend(AppliedFinding(f.kind, f.start + self._offset,
                                            f.end + self._offset, f.action)
                             for f in result.findings)
        self._buf = self._buf[cut:]
        self._offset += cut
        return result.text


def _original(norm: Normalized, i: int) -> int:
    """The original index of normalised index `i` (`i` may be the end)."""
    return len(norm.original) if i == len(norm.text) else norm.orig_index(i)


def _settle(norm: Normalized, candidates: list[Finding], shift: int, cut: int) -> int:
    """`cut` moved back until no candidate starting at or after `shift` spans it, and it is
    not inside the expansion of one original character (`ﬁ` -> `fi`)."""
    moved = True
    while moved:
        moved = False
        for f in candidates:
            if shift <= f.start < cut < f.end:
                cut, moved = f.start, True
        while shift < cut < len(norm.text) and \
                norm.orig_index(cut - 1) == norm.orig_index(cut):
            cut, moved = cut - 1, True
    return cut
