"""PII detection, redaction, restoring and stream handling: pure functions, no I/O.

    detectors  detect(text, kinds) -> [Finding(kind, start, end)]; one pure function per kind
    actions    Redactor (one per request), scan(text, rules, redactor) -> (text, findings)
    restore    restore(text, redactor), StreamRestorer, StreamScanner
    policy     parse_pii_policy(section), walk_texts, redact_request, redact_response
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
