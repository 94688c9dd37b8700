"""PII detection, redaction, restoring and stream handling: pure functions, no I/O.

    detectors  detect(text, kinds) -> [Finding(kind, start, end)]; one pure function per kind
    actions    Redactor (one per request), scan(text, rules, redactor) -> (text, findings)
    restore    restore(text, redactor), StreamRestorer, StreamScanner
    holdback   open_tail_start: how much of a stream's text may still become a finding
    normalize  the text the detectors see (format characters dropped; digits, dashes and
               look-alike letters folded), with offsets back to the original
    fields     walk_texts / walk_response_texts: every text of a body, by schema
    body_scan  scan_texts: all fields of a body in one pass, values split across fields too
    urls       the text a URL carries (percent-decoded; text data: URLs)
    policy     parse_pii_policy(section), redact_request, redact_response
    storage    StorageRedactor: every built-in kind redacted in what is kept or traced
    stream     ChunkFilter: output rules + restore over OpenAI stream chunks
    presidio   optional person / location detection (needs presidio-analyzer + a spaCy model)
"""

from gateway.pii.actions import (
    ACTIONS,
    AppliedFinding,
    PiiBlockedError,
    Redactor,
    ScanResult,
    scan,
    summarize,
)
from gateway.pii.detectors import KINDS, DetectorError, Finding, detect
from gateway.pii.policy import (
    PiiPolicy,
    PiiPolicyError,
    parse_pii_policy,
    redact_request,
    redact_response,
    restore_response,
    walk_texts,
)
from gateway.pii.restore import StreamRestorer, StreamScanner, restore
from gateway.pii.stream import ChunkFilter

__all__ = [
    "ACTIONS",
    "KINDS",
    "AppliedFinding",
    "ChunkFilter",
    "DetectorError",
    "Finding",
    "PiiBlockedError",
    "PiiPolicy",
    "PiiPolicyError",
    "Redactor",
    "ScanResult",
    "StreamRestorer",
    "StreamScanner",
    "detect",
    "parse_pii_policy",
    "redact_request",
    "redact_response",
    "restore",
    "restore_response",
    "scan",
    "summarize",
    "walk_texts",
]
