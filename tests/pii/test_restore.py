"""restore, StreamRestorer and StreamScanner on hand-picked cases (properties: test_properties)."""

from __future__ import annotations

import pytest

from gateway.pii.actions import MAX_PLACEHOLDER_LEN, PiiBlockedError, Redactor, scan
from gateway.pii.detectors import BUILTIN_KINDS
from gateway.pii.restore import MAX_HOLD, StreamRestorer, StreamScanner, restore

ALL = dict.fromkeys(BUILTIN_KINDS, "redact")
PEM = ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oTxtFI1\n"
       "oAoGCCqGSM49AwEHoUQDQgAE\n-----END EC PRIVATE KEY-----")


def _redactor_with(text: str) -> tuple[Redactor, str]:
    redactor = Redactor()
    return redactor, scan(text, ALL, redactor).text


def test_restore_puts_back_only_this_requests_placeholders() -> None:
    redactor, redacted = _redactor_with("bob@example.com and 4111 1111 1111 1111")
    assert redacted == "[EMAIL_1] and [CREDIT_CARD_1]"
    echoed = "Sure, [EMAIL_1]! Your card [CREDIT_CARD_1] and [EMAIL_9] and [EMAIL_1"
    assert restore(echoed, redactor) == \
        "Sure, bob@example.com! Your card 4111 1111 1111 1111 and [EMAIL_9] and [EMAIL_1"
    assert restore(echoed, Redactor()) == echoed


def test_stream_restorer_holds_back_only_a_possible_placeholder() -> None:
    redactor, _ = _redactor_with("bob@example.com")
    restorer = StreamRestorer(redactor)
    assert restorer.feed("Hello ") == "Hello "
    assert restorer.feed("[") == ""
    assert restorer.feed("EMA") == ""
    assert restorer.feed("IL_1") == ""
    assert restorer.feed("], bye [") == "bob@example.com, bye "
    assert restorer.feed("x") == "[x"  # cannot be a placeholder any more
    assert restorer.feed(" [EMAIL_2") == " [EMAIL_2"  # not one of ours
    assert restorer.feed(" [EMAIL_") == " "
    assert restorer.flush() == "[EMAIL_"


def test_stream_restorer_never_holds_more_than_a_placeholder() -> None:
    redactor = Redactor()
    for i in range(1, 20):
        redactor.placeholder("credit_card", f"4111 1111 1111 {i:04d}")
    restorer = StreamRestorer(redactor)
    held_max = 0
    for ch in "x [CREDIT_CARD_19] y [CREDIT_CARD_1":
        out = restorer.feed(ch)
        held_max = max(held_max, len(restorer._held))
        assert out is not None
    assert held_max < MAX_PLACEHOLDER_LEN
    assert held_max == len("[CREDIT_CARD_19")


def test_stream_scanner_emits_words_as_they_complete() -> None:
    scanner = StreamScanner(ALL)
    assert scanner.feed("Hello wor") == "Hello"
    assert scanner.feed("ld, how") == " world,"
    assert scanner.feed(" are you?\n") == " how are"
    assert scanner.flush() == " you?\n"


def test_stream_scanner_redacts_across_chunk_boundaries() -> None:
    scanner = StreamScanner(ALL, Redactor())
    parts = ["Mail bo", "b@exa", "mple.com or call +44 20 79", "46 0958. Card 4111 ",
             "1111 1111 11", "11 ok"]
    out = "".join(scanner.feed(p) for p in parts) + scanner.flush()
    assert out == "Mail [EMAIL_1] or call [PHONE_1]. Card [CREDIT_CARD_1] ok"
    assert [(f.kind, f.start) for f in scanner.findings] == \
        [("email", 5), ("phone", 29), ("credit_card", 52)]


def test_stream_scanner_holds_a_pem_block_until_its_end() -> None:
    scanner = StreamScanner({"secret": "redact"})
    text = f"Here:\n{PEM}\nDone now"
    lines = text.split("\n")
    outputs = [scanner.feed(line + "\n") for line in lines]
    end = lines.index("-----END EC PRIVATE KEY-----")
    assert "".join(outputs[:end + 1]) == "Here:"  # nothing of the block before its END
    assert "".join(outputs) + scanner.flush() == "Here:\n[SECRET_1]\nDone now\n"


def test_stream_scanner_blocks() -> None:
    scanner = StreamScanner({"us_ssn": "block"})
    assert scanner.feed("my number is ") == "my number"
    with pytest.raises(PiiBlockedError):
        scanner.feed("123-45-6789 ok")


def test_stream_scanner_forces_a_cut_on_a_very_long_token() -> None:
    scanner = StreamScanner(ALL)
    token = "x" * (MAX_HOLD + 100)
    out = scanner.feed(token)
    assert 0 < len(out) < len(token)
    assert out + scanner.flush() == token


def test_stream_scanner_passes_through_without_rules() -> None:
    scanner = StreamScanner({})
    assert scanner.feed("bob@example.com") == "bob@example.com"
    assert scanner.flush() == ""


def test_output_redaction_then_restore() -> None:
    redactor, redacted = _redactor_with("I am bob@example.com")
    assert redacted == "I am [EMAIL_1]"
    model_says = "Hi [EMAIL_1], write to eve@example.com"
    scanner, restorer = StreamScanner({"email": "redact"}, redactor), StreamRestorer(redactor)
    out = ""
    for ch in model_says:
        out += restorer.feed(scanner.feed(ch))
    out += restorer.feed(scanner.flush()) + restorer.flush()
    assert out == "Hi bob@example.com, write to [EMAIL_2]"
