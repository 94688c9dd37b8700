"""Putting originals back (`restore: true`) and scanning the model's output, also in streams.

`restore(text, redactor)` replaces the placeholders this request minted for its INPUT with
the original values; placeholders it does not know (or minted for output) stay as they are.

`StreamRestorer` does the same over a stream: `feed(chunk)` returns the text that is safe
to send now, `flush()` the rest. It holds back only a suffix that is a proper prefix of a
placeholder of this request (at most `MAX_PLACEHOLDER_LEN - 1` characters, e.g. `[CREDIT_CA`
while `[CREDIT_CARD_1]` may follow), so the first token is not delayed beyond that. Any
chunking gives exactly `restore(whole text)`.

`StreamScanner` redacts / masks / hashes PII in an output stream. Stream window:

- It emits text up to a *hard boundary*: a whitespace character no finding can contain
  (`detectors.is_soft_space`: a newline, a tab, a double space, or a single space that is
  not between digits / capitals / `()+` or next to `=`/`:`), once the character after it
  has arrived. Ordinary prose is emitted word by word: what is held back is the current
  run of text without a hard boundary (the last word, or e.g. `+44 20 7946 0958` until it
  is complete).
- From the start of an unterminated `-----BEGIN ... PRIVATE KEY-----` it holds until the
  END line arrives or `PEM_MAX` (16 KiB) characters have passed.
- A run without any hard boundary longer than `MAX_HOLD` (12 KiB) is cut by force,
  `MAX_TOKEN_LEN` (6 KiB, the longest single-token finding: a JWT) before its end and
  never inside a finding detected in it. So at most 12 KiB is held, or 12 KiB plus a
  PEM block being received (16 KiB).
- With `person` / `location` rules (names span spaces) only line breaks are boundaries.

Each emitted segment is scanned with 16 characters of context on both sides, and detectors
never match across a hard boundary, so the output equals `scan(whole text)` for any
chunking, except in a forced cut (runs of more than 12 KiB without a boundary), which can
differ where the one-shot scan would have matched across that point.
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
    Finding,
    detect,
    is_soft_space,
    pem_blocks,
)
from gateway.pii.normalize import normalize

MAX_HOLD = 2 * MAX_TOKEN_LEN
_CONTEXT = 16  # characters of context kept on each side of a segment


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
    with offsets in the whole original output.
    """

    def __init__(self, rules: Mapping[str, str], redactor: Redactor | None = None, *,
                 phase: Phase = "output") -> None:
        self.rules = dict(rules)
        self.redactor = redactor if redactor is not None else Redactor()
        self.phase: Phase = phase
        self.findings: list[AppliedFinding] = []
        self._buf = ""  # original text not emitted yet
        self._ctx = ""  # the last emitted original characters
        self._offset = 0  # stream offset of _buf[0]
        self._checked = 1  # normalised indexes below this hold no usable boundary
        self._ner = any(k in NER_KINDS for k in self.rules)

    def feed(self, chunk: str) -> str:
        if not self.rules:
            return chunk
        if not chunk:
            return ""
        self._buf += chunk
        cut, findings = self._cut()
        return self._emit(cut, findings) if cut > 0 else ""

    def flush(self) -> str:
        if not self._buf:
            return ""
        return self._emit(len(self._buf), None)

    # -- internals -------------------------------------------------------------------
    def _cut(self) -> tuple[int, list[Finding] | None]:
        """Where to cut `_buf` now (0: not yet), and findings when a forced cut has them."""
        buf = self._buf
        norm = normalize(buf)
        text = norm.text
        limit = len(text)  # no cut at or after this normalised index
        blocked: list[tuple[int, int]] = []  # nor inside these
        if "-----BEGIN " in text:
            for start, end, closed in pem_blocks(text):
                if closed or len(text) - start >= PEM_MAX:
                    blocked.append((start, end))
                else:
                    limit = start
                    break
        # the last hard boundary k (a whitespace character) whose next character is known
        top = min(limit, len(text) - 1)
        k = top - 1
        while k >= self._checked:
            if self._hard(text, k) and not any(s < k < e for s, e in blocked) and \
                    buf[norm.orig_index(k)].isspace():
                return norm.orig_index(k), None
            k -= 1
        self._checked = max(self._checked, top)
        if len(buf) <= MAX_HOLD or limit < len(text):
            return 0, None
        return self._forced_cut(len(buf) - MAX_TOKEN_LEN)

    def _hard(self, text: str, k: int) -> bool:
        ch = text[k]
        if not ch.isspace():
            return False
        if self._ner:  # names span spaces: only line breaks are safe
            return ch in "\n\r"
        return ch != " " or not is_soft_space(text[k - 1], text[k + 1])

    def _forced_cut(self, cut: int) -> tuple[int, list[Finding]]:
        window = self._ctx + self._buf
        shift = len(self._ctx)
        found = [Finding(f.kind, f.start - shift, f.end - shift)
                 for f in detect(window, tuple(self.rules)) if f.end > shift]
        for f in found:
            if f.start < cut < f.end:
                cut = f.start if f.start > 0 else f.end
                break
        return cut, [f for f in found if f.end <= cut]

    def _emit(self, cut: int, findings: list[Finding] | None) -> str:
        segment = self._buf[:cut]
        if findings is None:
            window = self._ctx + segment + self._buf[cut:cut + _CONTEXT]
            shift = len(self._ctx)
            # (min: a safety net; no finding crosses a hard boundary)
            findings = [Finding(f.kind, f.start - shift, min(f.end - shift, cut))
                        for f in detect(window, tuple(self.rules))
                        if shift <= f.start < shift + cut]
        result = apply(segment, findings, self.rules, self.redactor, self.phase)
        self.findings.extend(AppliedFinding(f.kind, f.start + self._offset,
                                            f.end + self._offset, f.action)
                             for f in result.findings)
        self._ctx = (self._ctx + segment)[-_CONTEXT:]
        self._buf = self._buf[cut:]
        self._offset += cut
        self._checked = 1
        return result.text
