"""Actions: redact (typed, numbered, stable within a request), mask, hash, block, allow."""

from __future__ import annotations

import copy

import pytest

from gateway.errors import PiiBlocked
from gateway.pii.actions import PLACEHOLDER, PiiBlockedError, Redactor, scan, summarize
from gateway.pii.detectors import DetectorError

KEY = b"deployment-key-for-tests"


@pytest.mark.parametrize(("text", "rules", "expected"), [
    ("mail bob@example.com today", {"email": "redact"}, "mail [EMAIL_1] today"),
    ("card 4111 1111 1111 1111", {"credit_card": "redact"}, "card [CREDIT_CARD_1]"),
    ("order 1234 5678 9012 3456", {"credit_card": "redact"}, "order 1234 5678 9012 3456"),
    ("", {"email": "redact"}, ""),
    ("a@example.com b@example.com a@example.com", {"email": "redact"},
     "[EMAIL_1] [EMAIL_2] [EMAIL_1]"),
    ("x@example.com 555-123-4567 y@example.com 020 7946 0958",
     {"email": "redact", "phone": "redact"}, "[EMAIL_1] [PHONE_1] [EMAIL_2] [PHONE_2]"),
    ("card 4111 1111 1111 1111", {"credit_card": "mask"}, "card ***************1111"),
    ("ip ::1", {"ip_address": "mask"}, "ip ***"),
    ("mail bob@example.com", {"email": "allow"}, "mail bob@example.com"),
    ("mail bob@example.com", {"phone": "redact"}, "mail bob@example.com"),
    ("ssn 123-45-6789, ip 10.1.2.3", {"us_ssn": "redact", "ip_address": "mask"},
     "ssn [US_SSN_1], ip ****.2.3"),
])
def test_scan(text: str, rules: dict[str, str], expected: str) -> None:
    assert scan(text, rules).text == expected


def test_same_value_same_placeholder_across_the_texts_of_a_request() -> None:
    redactor = Redactor()
    rules = {"email": "redact", "phone": "redact"}
    first = scan("from bob@example.com", rules, redactor).text
    second = scan("call 555-123-4567 or bob@example.com or eve@example.com", rules, redactor).text
    assert first == "from [EMAIL_1]"
    assert second == "call [PHONE_1] or [EMAIL_1] or [EMAIL_2]"
    other_request = scan("eve@example.com", rules, Redactor()).text
    assert other_request == "[EMAIL_1]"


def test_findings_and_counts() -> None:
    text = "bob@example.com, bob@example.com, 4111 1111 1111 1111, 10.0.0.1"
    result = scan(text, {"email": "redact", "credit_card": "mask", "ip_address": "allow"})
    assert [f.as_dict() for f in result.findings] == [
        {"kind": "email", "start": 0, "end": 15, "action": "redact"},
        {"kind": "email", "start": 17, "end": 32, "action": "redact"},
        {"kind": "credit_card", "start": 34, "end": 53, "action": "mask"},
        {"kind": "ip_address", "start": 55, "end": 63, "action": "allow"},
    ]
    assert result.counts == {"email": {"count": 2, "action": "redact"},
                             "credit_card": {"count": 1, "action": "mask"},
                             "ip_address": {"count": 1, "action": "allow"}}
    assert "bob" not in repr(result.findings) and "bob" not in repr(result.counts)


def test_redactor_summary_accumulates_over_a_request() -> None:
    redactor = Redactor()
    scan("bob@example.com", {"email": "redact"}, redactor)
    scan("eve@example.com", {"email": "mask"}, redactor, phase="output")
    assert redactor.summary() == {"email": {"count": 2, "action": "redact"}}


def test_summarize_takes_the_strongest_action() -> None:
    result = scan("bob@example.com", {"email": "allow"})
    assert summarize(result.findings + scan("x@example.com", {"email": "hash"},
                                            Redactor(KEY)).findings) == \
        {"email": {"count": 2, "action": "hash"}}


def test_hash_is_keyed_stable_and_not_reversible() -> None:
    a = scan("mail bob@example.com", {"email": "hash"}, Redactor(KEY)).text
    b = scan("again bob\u200b@example.com", {"email": "hash"}, Redactor(KEY)).text
    c = scan("mail bob@example.com", {"email": "hash"}, Redactor(b"another key")).text
    assert a.startswith("mail [EMAIL:") and a.endswith("]")
    digest = a[len("mail [EMAIL:"):-1]
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert b == f"again [EMAIL:{digest}]"  # same normalised value, same hash
    assert c != a
    assert PLACEHOLDER.search(a) is None  # a hash is never restored


def test_hash_without_a_key_fails_closed() -> None:
    with pytest.raises(DetectorError, match="hash key"):
        scan("bob@example.com", {"email": "hash"}, Redactor())


def test_block_raises_and_names_only_the_kind() -> None:
    redactor = Redactor()
    with pytest.raises(PiiBlockedError) as info:
        scan("card 4111 1111 1111 1111 and bob@example.com",
             {"email": "redact", "credit_card": "block"}, redactor)
    err = info.value
    assert isinstance(err, PiiBlocked)
    assert (err.status_code, err.code, err.kind) == (400, "pii_blocked", "credit_card")
    assert "4111" not in err.message and "bob" not in err.message
    assert err.to_openai_body()["error"]["code"] == "pii_blocked"
    assert redactor.summary()["credit_card"] == {"count": 1, "action": "block"}
    assert redactor.original("[EMAIL_1]") is None  # nothing minted for a refused request


def test_block_in_output_names_the_response() -> None:
    with pytest.raises(PiiBlockedError, match="response"):
        scan("bob@example.com", {"email": "block"}, phase="output")


def test_input_is_never_mutated() -> None:
    text = "bob@example.com 4111 1111 1111 1111"
    before = copy.copy(text)
    scan(text, {"email": "redact", "credit_card": "mask"})
    assert text == before


def test_placeholders_the_caller_already_wrote_are_not_reused() -> None:
    redactor = Redactor()
    out = scan("literal [EMAIL_1] and bob@example.com", {"email": "redact"}, redactor).text
    assert out == "literal [EMAIL_1] and [EMAIL_2]"
    assert redactor.original("[EMAIL_1]") is None
    assert redactor.original("[EMAIL_2]") == "bob@example.com"


def test_output_placeholders_are_not_restorable() -> None:
    redactor = Redactor()
    scan("bob@example.com", {"email": "redact"}, redactor)
    out = scan("eve@example.com and bob@example.com", {"email": "redact"}, redactor,
               phase="output").text
    assert out == "[EMAIL_2] and [EMAIL_1]"
    assert redactor.original("[EMAIL_1]") == "bob@example.com"
    assert redactor.original("[EMAIL_2]") is None
    assert redactor.could_start_placeholder("[EMAIL_") and \
        not redactor.could_start_placeholder("[EMAIL_2")
