"""Table-driven detector tests: what each kind finds, and look-alikes it must leave alone."""

from __future__ import annotations

import pytest

from gateway.pii import detectors
from gateway.pii.detectors import BUILTIN_KINDS, detect
from tests.pii.strategies import wide

WIDE_CARD = wide("4111") + " " + wide("1111") + " " + wide("1111") + " " + wide("1111")

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\n"
       "Z1BjP5CE/Wm/Rr500P\n-----END RSA PRIVATE KEY-----")
GW_KEY = "sk-gw-" + "Ab3_-xYz" * 5 + "Q9z"  # 43 url-safe characters

# (kind, text, [expected values]) - every value must be found with exactly this span
POSITIVES = [
    ("email", "mail bob@example.com today", ["bob@example.com"]),
    ("email", "<alice.smith+tag@mail.example.co.uk>", ["alice.smith+tag@mail.example.co.uk"]),
    ("email", "end of sentence: j_doe@corp.example.org.", ["j_doe@corp.example.org"]),
    ("email", "mailto:x@y.io, then", ["x@y.io"]),
    ("email", "bob\u200b@example.com", ["bob\u200b@example.com"]),
    ("email", "bo\u200db@exam\u2060ple.com", ["bo\u200db@exam\u2060ple.com"]),
    ("email", wide("bob@example.com"), [wide("bob@example.com")]),
    ("phone", "call (555) 123-4567 now", ["(555) 123-4567"]),
    ("phone", "call 555-123-4567 now", ["555-123-4567"]),
    ("phone", "call 555.123.4567 now", ["555.123.4567"]),
    ("phone", "call 1-800-555-0199 now", ["1-800-555-0199"]),
    ("phone", "call +1 (555) 123-4567 now", ["+1 (555) 123-4567"]),
    ("phone", "UK office 020 7946 0958.", ["020 7946 0958"]),
    ("phone", "UK mobile 07700 900123", ["07700 900123"]),
    ("phone", "intl +44 20 7946 0958 or +44 (0)20 7946 0958", ["+44 20 7946 0958",
                                                             "+44 (0)20 7946 0958"]),
    ("phone", "Berlin 030 1234567 / (030) 1234567 / 030-1234567", ["030 1234567",
                                                                   "(030) 1234567",
                                                                   "030-1234567"]),
    ("phone", "Paris 01 23 45 67 89 or 01.23.45.67.89", ["01 23 45 67 89", "01.23.45.67.89"]),
    ("phone", "compact +4930123456 and +33 1 23 45 67 89", ["+4930123456", "+33 1 23 45 67 89"]),
    ("phone", "tel:+14155552671", ["+14155552671"]),
    ("phone", "hotline +44 20 7946 0958 24/7", ["+44 20 7946 0958"]),
    ("phone", "call 555-123-4567 9am to 5pm or 020 7946 0958 24/7", ["555-123-4567",
                                                                   "020 7946 0958"]),
    ("phone", "+44 20 7946 0958 1234 5678", ["+44 20 7946 0958"]),
    ("credit_card", "visa 4111 1111 1111 1111 ok", ["4111 1111 1111 1111"]),
    ("credit_card", "visa 4111-1111-1111-1111 ok", ["4111-1111-1111-1111"]),
    ("credit_card", "mc 5500000000000004.", ["5500000000000004"]),
    ("credit_card", "amex 3782 822463 10005", ["3782 822463 10005"]),
    ("credit_card", "amex 378282246310005", ["378282246310005"]),
    ("credit_card", "discover 6011111111111117", ["6011111111111117"]),
    ("credit_card", "jcb 3530111333300000", ["3530111333300000"]),
    ("credit_card", "mc 2223000048400011", ["2223000048400011"]),
    ("credit_card", "full width " + WIDE_CARD, [WIDE_CARD]),
    ("us_ssn", "ssn 123-45-6789.", ["123-45-6789"]),
    ("us_ssn", "ssn 078 05 1120", ["078 05 1120"]),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00.", ["DE89 3704 0044 0532 0130 00"]),
    ("iban", "IBAN DE89370400440532013000", ["DE89370400440532013000"]),
    ("iban", "GB82 WEST 1234 5698 7654 32 is mine", ["GB82 WEST 1234 5698 7654 32"]),
    ("iban", "NL91ABNA0417164300, FR1420041010050500013M02606",
     ["NL91ABNA0417164300", "FR1420041010050500013M02606"]),
    ("iban", "pay to: BE68 5390 0754 7034 THANKS", ["BE68 5390 0754 7034"]),
    ("ip_address", "host 192.168.1.1 down", ["192.168.1.1"]),
    ("ip_address", "from 8.8.8.8, to 255.255.255.255.", ["8.8.8.8", "255.255.255.255"]),
    ("ip_address", "range 10.0.0.1-10.0.0.9", ["10.0.0.1", "10.0.0.9"]),
    ("ip_address", "v6 2001:db8::8a2e:370:7334 and ::1", ["2001:db8::8a2e:370:7334", "::1"]),
    ("ip_address", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.",
     ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"]),
    ("ip_address", "link fe80::1ff:fe23:4567:890a%eth0", ["fe80::1ff:fe23:4567:890a"]),
    ("ip_address", "mapped ::ffff:192.0.2.128 here", ["::ffff:192.0.2.128"]),
    ("secret", "key sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
     ["sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"]),
    ("secret", "key sk-1234567890abcdefghijklmnopqrstuvwxyzABCDEFGH",
     ["sk-1234567890abcdefghijklmnopqrstuvwxyzABCDEFGH"]),
    ("secret", "anthropic sk-ant-api03-" + "x1Y2" * 23 + "AA",
     ["sk-ant-api03-" + "x1Y2" * 23 + "AA"]),
    ("secret", "aws AKIAIOSFODNN7EXAMPLE and ASIAY34FZKBOKMUTVV7A",
     ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"]),
    ("secret", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]),
    ("secret", 'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
     ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]),
    ("secret", "gh ghp_16C7e42F292c6912E7710c838347Ae178B4a",
     ["ghp_16C7e42F292c6912E7710c838347Ae178B4a"]),
    ("secret", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
     ["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"]),
    ("secret", "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
     ["xoxb-123456789012-1234567890123-AbCdEfGhIjKl"]),
    ("secret", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc and rk_live_4eC39HqLyjWDarjtT1zdp7dc",
     ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "rk_live_4eC39HqLyjWDarjtT1zdp7dc"]),
    ("secret", "test key sk_test_4eC39HqLyjWDarjtT1zdp7dc", ["sk_test_4eC39HqLyjWDarjtT1zdp7dc"]),
    ("secret", "google AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
     ["AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"]),
    ("secret", f"Authorization: Bearer {JWT}", [JWT]),
    ("secret", f"key:\n{PEM}\nthanks", [PEM]),
    ("secret", f"our key {GW_KEY}.", [GW_KEY]),
]

# (kind, text) - nothing of `kind` may be found
NEGATIVES = [
    ("email", "not an email: bob@localhost or @handle or a@b"),
    ("email", "a@" * 50),
    ("phone", "the date 2024-01-15 and 15.01.2024 and 01/15/2024"),
    ("phone", "version 1.2.3 and 10.0.19045 and v2.31.4"),
    ("phone", "order 12345678, ticket 20240115-0042, amount 1,234,567"),
    ("phone", "short numbers 911, 112, 4567, 555-1234"),
    ("phone", "time 10:30:45 and 2024-01-15T10:30:00Z"),
    ("phone", "123-456-7890"),  # NANP area codes never start with 1
    ("phone", "SKU 0576-659-73 and part 030-12-34"),
    ("credit_card", "luhn fails: 4111 1111 1111 1112 and 1234 5678 9012 3456"),
    ("credit_card", "unknown issuer 9999 9999 9999 9995"),
    ("credit_card", "too long 41111111111111111111 and inside 14111111111111111115"),
    ("credit_card", "tracking 1Z999AA10123456784"),
    ("us_ssn", "bad areas 000-12-3456 666-12-3456 900-12-3456 999-12-3456"),
    ("us_ssn", "bad group 123-00-4567 and bad serial 123-45-0000"),
    ("us_ssn", "mixed separators 123-45 6789 and no separators 123456789"),
    ("us_ssn", "part of a longer number 1123-45-6789 and 123-45-67890"),
    ("iban", "bad check DE89 3704 0044 0532 0130 01"),
    ("iban", "bad length DE89 3704 0044 0532 0130"),
    ("iban", "no such country ZZ12 3456 7890 1234 56"),
    ("iban", "words AB12 CDEF GHIJ"),
    ("ip_address", "version 1.2.3.4.5 and 10.0.0 and 1.2.3"),
    ("ip_address", "out of range 256.1.1.1 and 1.2.3.999"),
    ("ip_address", "leading zeros 01.02.03.04"),
    ("ip_address", "pi 3.14159 and v1.2.3.4 and build-1.2.3.4.5"),
    ("ip_address", "time 12:30:45, MAC 00:1a:2b:3c:4d:5e, C++ std::vector, a::b"),
    ("ip_address", "ratio 1:2:3 and dead::beef"),
    ("secret", "sk-learn is a library; see sk-the-docs-for-more-details"),
    ("secret", "task-force and ask-me-anything-about-anything-really-now"),
    ("secret", "AKIA is a prefix but AKIA123 is too short"),
    ("secret", "eyJ alone, eyJhbGciOiJIUzI1NiJ9 without the rest"),
    ("secret", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
    ("secret", "ghp_short and xoxb-short"),
]


def _values(text: str, kind: str) -> list[str]:
    return [text[f.start:f.end] for f in detect(text, (kind,))]


@pytest.mark.parametrize(("kind", "text", "expected"), POSITIVES,
                         ids=[f"{k}:{t[:30]}" for k, t, _ in POSITIVES])
def test_finds(kind: str, text: str, expected: list[str]) -> None:
    assert _values(text, kind) == expected
    # with every detector on, the same values come out, with this kind
    found = [(f.kind, text[f.start:f.end]) for f in detect(text, BUILTIN_KINDS)]
    for value in expected:
        assert (kind, value) in found


@pytest.mark.parametrize(("kind", "text"), NEGATIVES, ids=[f"{k}:{t[:30]}" for k, t in NEGATIVES])
def test_leaves_look_alikes_alone(kind: str, text: str) -> None:
    assert _values(text, kind) == []


@pytest.mark.parametrize(("text", "kinds"), [
    ("4111 1111 1111 1111", ["credit_card"]),  # not also a phone number
    ("call 020 7946 0958", ["phone"]),
    ("DE89 3704 0044 0532 0130 00", ["iban"]),  # not a card, phone or SSN inside it
    ("mail bob@192.168.1.1.example.com", ["email"]),
    (f"token {JWT}", ["secret"]),
    (f"{PEM}", ["secret"]),  # nothing inside the key block
])
def test_overlaps_resolve_to_one_finding(text: str, kinds: list[str]) -> None:
    assert [f.kind for f in detect(text, BUILTIN_KINDS)] == kinds


def test_overlap_rules() -> None:
    F = detectors.Finding
    # longer wins; then kind priority; then earlier start
    assert detectors.resolve_overlaps([F("phone", 0, 10), F("secret", 2, 8)]) == [F("phone", 0, 10)]
    assert detectors.resolve_overlaps([F("phone", 0, 8), F("secret", 0, 8)]) == [F("secret", 0, 8)]
    assert detectors.resolve_overlaps([F("email", 0, 5), F("email", 3, 8), F("phone", 7, 12)]) \
        == [F("email", 0, 5), F("phone", 7, 12)]


def test_findings_are_sorted_and_in_original_offsets() -> None:
    text = "\u200b" * 3 + wide("mail") + " bob@example.com " + WIDE_CARD + " \u200b 10.0.0.1"
    found = detect(text)
    assert [f.kind for f in found] == ["email", "credit_card", "ip_address"]
    assert [text[f.start:f.end] for f in found] == ["bob@example.com", WIDE_CARD, "10.0.0.1"]


def test_unterminated_pem_block_is_cut_at_its_base64_lines() -> None:
    text = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAo==\n"
            "Thanks!")
    assert _values(text, "secret") == [text[:text.index("\nThanks")]]


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown PII kind"):
        detect("x", ("emial",))


def test_a_failing_detector_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> list[detectors.Finding]:
        raise RuntimeError("bug with bob@example.com")

    monkeypatch.setattr(detectors, "find_emails", boom)
    with pytest.raises(detectors.DetectorError) as info:
        detect("bob@example.com", ("email",))
    assert info.value.status_code == 503 and info.value.code == "redaction_unavailable"
    assert "bob@" not in str(info.value)  # no raw PII in the error


@pytest.mark.parametrize(("before", "after", "soft"), [
    ("1", "2", True), ("A", "B", True), (")", "5", True), ("4", "(", True), ("4", "+", True),
    ("y", "=", True), ("=", "w", True), (":", '"', True),
    ("a", "b", False), ("1", "a", False), ("a", "1", False), (".", "1", False), ("", "1", False),
])
def test_soft_spaces(before: str, after: str, soft: bool) -> None:
    assert detectors.is_soft_space(before, after) is soft
