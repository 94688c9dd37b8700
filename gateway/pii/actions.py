"""What happens to each finding: `allow`, `redact`, `mask`, `hash` or `block`.

- `redact`: a typed, numbered placeholder such as `[EMAIL_1]`. Within one request the same
  value always gets the same placeholder: a `Redactor` holds the value <-> placeholder map
  for ONE request (create one per request, use it for every text of that request).
- `mask`: every character but the last 4 becomes `*` (a value of 4 or fewer: all `*`).
- `hash`: `[EMAIL:` + the first 12 hex digits of HMAC-SHA256(deployment key, normalised
  value) + `]`: stable across requests, so logs can be correlated, and not reversible.
- `block`: `PiiBlockedError` (400 `pii_blocked`); nothing is replaced, nothing is sent.
- `allow`: left as is, but counted.

Nothing here mutates its input. Raw values live only in the Redactor's in-memory map (for
`restore`); findings and the audit summary hold kinds, offsets, counts and actions only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from gateway.errors import PiiBlocked
from gateway.pii.detectors import KINDS, DetectorError, Finding, detect
from gateway.pii.normalize import normalize

ACTIONS = ("allow", "redact", "mask", "hash", "block")
# For the audit summary, when one kind met several actions in a request.
_STRENGTH = {"allow": 0, "mask": 1, "hash": 2, "redact": 3, "block": 4}
Phase = Literal["input", "output"]

_LABELS = "|".join(sorted((k.upper() for k in KINDS), key=len, reverse=True))
# A placeholder as we write it; `restore` replaces only the ones this request minted.
PLACEHOLDER = re.compile(rf"\[(?:{_LABELS})_[1-9][0-9]{{0,8}}\]")
MAX_PLACEHOLDER_LEN = max(len(k) for k in KINDS) + 12  # "[" KIND "_" 9 digits "]"


class PiiBlockedError(PiiBlocked):
    """The policy blocks a kind that was found. Names the kind, never the value."""

    def __init__(self, kind: str, phase: Phase = "input") -> None:
        where = "request" if phase == "input" else "response"
        super().__init__(f"the {where} contains {kind} data, which the policy blocks",
                         param=None)
        self.kind = kind
        self.phase = phase


class AppliedFinding(NamedTuple):
    """A finding and the action applied to it; offsets are in the text that was scanned."""

    kind: str
    start: int
    end: int
    action: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "action": self.action}


def summarize(findings: Iterable[AppliedFinding]) -> dict[str, dict[str, object]]:
    """The audit event's `pii` field: `{KIND: {"count": n, "action": a}}`."""
    out: dict[str, dict[str, object]] = {}
    for f in findings:
        entry = out.setdefault(f.kind, {"count": 0, "action": f.action})
        entry["count"] += 1  # type: ignore[operator]
        if _STRENGTH[f.action] > _STRENGTH[str(entry["action"])]:
            entry["action"] = f.action
    return out


class ScanResult(NamedTuple):
    text: str
    findings: list[AppliedFinding]

    @property
    def counts(self) -> dict[str, dict[str, object]]:
        return summarize(self.findings)


class Redactor:
    """The placeholders of ONE request: value <-> placeholder, in memory only.

    Placeholders minted while scanning the input are restorable (`original()`); those
    minted for the model's output are not, so output redaction survives `restore`.
    `hash_key` is the deployment's key for the `hash` action.
    """

    def __init__(self, hash_key: bytes | None = None) -> None:
        self._hash_key = hash_key
        self._placeholders: dict[tuple[str, str], str] = {}  # (kind, value) -> placeholder
        self._originals: dict[str, str] = {}  # restorable placeholder -> value
        self._counters: dict[str, int] = {}
        self._reserved: set[str] = set()  # placeholder-like text already in the input
        self._summary: dict[str, dict[str, object]] = {}
        self._prefixes: frozenset[str] | None = frozenset()

    def reserve_existing(self, text: str) -> None:
        """Never mint a placeholder that `text` already contains literally, so restoring
        gives back exactly what the caller sent."""
        if "[" in text:
            self._reserved.update(PLACEHOLDER.findall(text))

    def placeholder(self, kind: str, value: str, *, restorable: bool = True) -> str:
        key = (kind, value)
        ph = self._placeholders.get(key)
        if ph is None:
            n = self._counters.get(kind, 0)
            while True:
                n += 1
                ph = f"[{kind.upper()}_{n}]"
                if ph not in self._reserved:
                    break
            self._counters[kind] = n
            self._placeholders[key] = ph
        if restorable and ph not in self._originals:
            self._originals[ph] = value
            self._prefixes = None
        return ph

    def hashed(self, kind: str, value: str) -> str:
        if not self._hash_key:
            raise DetectorError("the hash action needs a deployment hash key")
        digest = hmac.new(self._hash_key, normalize(value).text.encode(), hashlib.sha256)
        return f"[{kind.upper()}:{digest.hexdigest()[:12]}]"

    def replacement(self, kind: str, value: str, action: str, *, restorable: bool) -> str:
        if action == "redact":
            return self.placeholder(kind, value, restorable=restorable)
        if action == "mask":
            return "*" * len(value) if len(value) <= 4 else "*" * (len(value) - 4) + value[-4:]
        if action == "hash":
            return self.hashed(kind, value)
        raise ValueError(f"no replacement for action {action}")

    def original(self, placeholder: str) -> str | None:
        """The value behind a restorable placeholder of this request, else None."""
        return self._originals.get(placeholder)

    def conceal(self, text: str) -> str:
        """The inverse of restore: this request's original values back to placeholders.

        Used for what is stored after a response was restored for the caller."""
        for placeholder, value in sorted(self._originals.items(), key=lambda kv: -len(kv[1])):
            if value in text:
                text = text.replace(value, placeholder)
        return text

    @property
    def restorable(self) -> bool:
        return bool(self._originals)

    def could_start_placeholder(self, text: str) -> bool:
        """Whether `text` is a proper prefix of a restorable placeholder."""
        if self._prefixes is None:
            self._prefixes = frozenset(ph[:i] for ph in self._originals for i in range(1, len(ph)))
        return text in self._prefixes

    def record(self, findings: Iterable[AppliedFinding]) -> None:
        for kind, entry in summarize(findings).items():
            mine = self._summary.setdefault(kind, {"count": 0, "action": entry["action"]})
            mine["count"] += entry["count"]  # type: ignore[operator]
            if _STRENGTH[str(entry["action"])] > _STRENGTH[str(mine["action"])]:
                mine["action"] = entry["action"]

    def summary(self) -> dict[str, dict[str, object]]:
        """Everything found in this request so far, for the audit event's `pii` field."""
        return {k: dict(v) for k, v in self._summary.items()}


def apply(text: str, findings: Iterable[Finding], rules: Mapping[str, str], redactor: Redactor,
          phase: Phase = "input") -> ScanResult:
    """Apply `rules` to `findings` (sorted, non-overlapping, offsets into `text`)."""
    applied = [AppliedFinding(f.kind, f.start, f.end, rules[f.kind]) for f in findings]
    if not applied:
        return ScanResult(text, applied)
    redactor.record(applied)
    for f in applied:
        if f.action == "block":
            raise PiiBlockedError(f.kind, phase)
    restorable = phase == "input"
    if restorable:
        redactor.reserve_existing(text)
    pieces: list[str] = []
    pos = 0
    for f in applied:
        if f.action == "allow":
            continue
        pieces.append(text[pos:f.start])
        pieces.append(redactor.replacement(f.kind, text[f.start:f.end], f.action,
                                           restorable=restorable))
        pos = f.end
    if not pieces:
        return ScanResult(text, applied)
    pieces.append(text[pos:])
    return ScanResult("".join(pieces), applied)


def scan(text: str, rules: Mapping[str, str], redactor: Redactor | None = None, *,
         phase: Phase = "input") -> ScanResult:
    """Detect the kinds named in `rules` and apply each kind's action.

    Returns `(new_text, findings)`; `findings` carry kind, start, end (in `text`) and
    action, and `.counts` is the audit summary. Raises `PiiBlockedError` when a `block`
    kind is found and `DetectorError` (fail closed) when a detector fails.
    """
    if redactor is None:
        redactor = Redactor()
    if not text or not rules:
        return ScanResult(text, [])
    return apply(text, detect(text, tuple(rules)), rules, redactor, phase)
