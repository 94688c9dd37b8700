"""restore, StreamRestorer and StreamScanner on hand-picked cases (properties: test_properties)."""

from __future__ import annotations

import pytest

from gateway.pii.actions import MAX_PLACEHOLDER_LEN, PiiBlockedError, Redactor, scan
from gateway.pii.detectors import BUILTIN_KINDS
from gateway.pii.restore import StreamRestorer, StreamScanner, restore

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


DEFAULT_OUTPUT = {"credit_card": "redact", "secret": "redact"}  # policies/default.yaml
EMAIL = {"email": "redact"}

# (rules, chunks as the upstream sends them, what each feed sends on, what flush sends)
HOLD_BACK = {
    "default rules: words go out with their own chunk": (
        DEFAULT_OUTPUT, ["Hello", " from", " the", " gateway", "."],
        ["Hello", " from", " the", " gateway", "."], ""),
    "default rules: a number waits for what rules out a card": (
        DEFAULT_OUTPUT, ["In", " 2024", ",", " we"], ["In", " ", "2024,", " we"], ""),
    "default rules: a card is sent redacted once it is complete": (
        DEFAULT_OUTPUT, ["Card 4111", " 1111", " 1111 1111", " ok"],
        ["Card ", "", "", "[CREDIT_CARD_1] ok"], ""),
    "default rules: a word that may begin a key waits for its next character": (
        DEFAULT_OUTPUT, ["Use sk", "ills", " or", " sk", "-proj-", "abcdefghij1234567890xyz",
                         " now"],
        ["Use ", "skills", " or", " ", "", "", "[SECRET_1] now"], ""),
    "default rules: a word held at the end of the stream is flushed": (
        DEFAULT_OUTPUT, ["so", " e"], ["so", " "], "e"),
    "email rules: a trailing word waits for a character an address cannot have": (
        EMAIL, ["Hello", " from", " bob", "@example.com", " ok"],
        ["", "Hello ", "from ", "", "[EMAIL_1] "], "ok"),
    "email rules: punctuation ends a word too": (
        EMAIL, ["Hi,", " you!", "\n"], ["Hi,", " you!", "\n"], ""),
    "no rules: nothing is held": (
        {}, ["bob", "@example.com", " 4111"], ["bob", "@example.com", " 4111"], ""),
}


@pytest.mark.parametrize("case", HOLD_BACK.values(), ids=HOLD_BACK.keys())
def test_stream_scanner_holds_back_only_what_may_still_be_a_finding(case) -> None:
    rules, chunks, sent, rest = case
    scanner = StreamScanner(rules, Redactor())
    assert [scanner.feed(c) for c in chunks] == sent
    assert scanner.flush() == rest


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
    assert "".join(outputs[:end]) == "Here:\n"  # nothing of the block before its END
    assert outputs[end] == "[SECRET_1]\n"  # sent with the END line
    assert "".join(outputs) + scanner.flush() == "Here:\n[SECRET_1]\nDone now\n"


def test_stream_scanner_blocks() -> None:
    scanner = StreamScanner({"us_ssn": "block"})
    assert scanner.feed("my number is ") == "my number is "
    with pytest.raises(PiiBlockedError):
        scanner.feed("123-45-6789 ok")


def test_stream_scanner_holds_a_long_word_only_as_far_as_a_local_part_reaches() -> None:
    scanner = StreamScanner(ALL)
    token = "x" * 10_000
    out = scanner.feed(token)
    assert out == token[:-65]  # 65 local characters: one more says "not an address"
    assert out + scanner.flush() == token


def test_stream_scanner_holds_a_jwt_being_written_whole() -> None:
    scanner = StreamScanner({"secret": "redact"})
    jwt = "eyJ" + "a" * 30 + ".eyJ" + "b" * 40 + "." + "c" * 43
    sent = [scanner.feed(jwt[i:i + 7]) for i in range(0, len(jwt), 7)]
    assert "".join(sent) == ""
    assert scanner.feed(" ok") == "[SECRET_1] ok"


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
