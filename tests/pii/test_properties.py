"""Property tests (hypothesis): redaction leaves no value behind, restore inverts it, and
streaming gives exactly the one-shot result for any chunking."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.pii.actions import Redactor, scan
from gateway.pii.detectors import (
    BUILTIN_KINDS,
    detect,
    detect_normalized,
    is_soft_space,
    pem_blocks,
)
from gateway.pii.holdback import max_held, open_tail_start
from gateway.pii.normalize import normalize
from gateway.pii.restore import StreamRestorer, StreamScanner, restore
from gateway.pii.stream import ChunkFilter
from tests.pii.strategies import VALUES, any_value, chunked, documents, loose_separators

ALL_REDACT = dict.fromkeys(BUILTIN_KINDS, "redact")
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(documents())
def test_redaction_never_leaves_a_value_in_the_output(doc: tuple[str, list[str]]) -> None:
    text, values = doc
    out = scan(text, ALL_REDACT).text
    for value in values:
        assert value not in out


@SETTINGS
@given(st.sampled_from(sorted(VALUES)), st.data())
def test_each_kind_is_found_with_its_exact_span(kind: str, data: st.DataObject) -> None:
    value = data.draw(VALUES[kind])
    text = f"see {value} here"
    assert [(f.kind, text[f.start:f.end]) for f in detect(text)] == [(kind, value)]


@SETTINGS
@given(st.one_of(documents().map(lambda d: d[0]), st.text(max_size=300)))
def test_restore_inverts_redact(text: str) -> None:
    redactor = Redactor()
    assert restore(scan(text, ALL_REDACT, redactor).text, redactor) == text


@SETTINGS
@given(documents(), st.data())
def test_streaming_restore_equals_restore(doc: tuple[str, list[str]],
                                          data: st.DataObject) -> None:
    text, _ = doc
    redactor = Redactor()
    redacted = scan(text, ALL_REDACT, redactor).text
    # what a model might send back: our placeholders, near misses and other brackets
    noise = data.draw(st.lists(st.sampled_from(["[EMAIL_1", "[EMAIL_99]", "[", "]", "[[",
                                                "[PHONE_", "x"]), max_size=4))
    echoed = redacted + "".join(noise) + redacted[: len(redacted) // 2]
    restorer = StreamRestorer(redactor)
    out = "".join(restorer.feed(c) for c in chunked(data.draw, echoed)) + restorer.flush()
    assert out == restore(echoed, redactor)


@SETTINGS
@given(st.one_of(documents(loose_separators).map(lambda d: d[0]), st.text(max_size=200)),
       st.data())
def test_streaming_scan_equals_one_shot_scan(text: str, data: st.DataObject) -> None:
    expected = scan(text, ALL_REDACT, Redactor(), phase="output")
    scanner = StreamScanner(ALL_REDACT, Redactor())
    out = "".join(scanner.feed(c) for c in chunked(data.draw, text)) + scanner.flush()
    assert out == expected.text
    assert scanner.findings == expected.findings


@SETTINGS
@given(st.one_of(documents(loose_separators).map(lambda d: d[0]), st.text(max_size=200)))
def test_no_finding_crosses_a_hard_boundary(text: str) -> None:
    # the contract StreamScanner relies on (detectors module docstring)
    norm = normalize(text).text
    pems = [(s, e) for s, e, _ in pem_blocks(norm)]
    for f in detect(norm):
        if any(s <= f.start and f.end <= e for s, e in pems):
            continue
        for k in range(f.start, f.end):
            if norm[k].isspace():
                assert norm[k] == " " and is_soft_space(norm[k - 1], norm[k + 1]), \
                    (f, norm[f.start:f.end])


# Any character at all, with the ones normalisation drops, folds or expands made likely.
_TRICKY = st.sampled_from(list("\u200b\u200e\u2066\u00ad\ufe0f\u0301\u2010\u2212\u0663"
                               "\u0430\u03bf\uff11\ufb01\u2026\u3000\u00a0a1 @.-"))
_ANY_TEXT = st.text(st.one_of(st.characters(), _TRICKY), max_size=60)


@SETTINGS
@given(_ANY_TEXT)
def test_normalised_offsets_map_exactly_to_the_original(text: str) -> None:
    norm = normalize(text)
    assert norm.text == "".join(normalize(ch).text for ch in text)  # per character
    for i in range(len(norm.text)):
        j = norm.orig_index(i)
        assert norm.text[i] in normalize(text[j]).text
    for start in range(len(norm.text)):
        for end in range(start + 1, len(norm.text) + 1):
            s, e = norm.span(start, end)
            assert normalize(text[s:e]).text == norm.text[start:end] or \
                len(normalize(text[s:e]).text) > end - start  # an expansion cut inside


@SETTINGS
@given(_ANY_TEXT, st.integers(0, 60))
def test_normalising_a_prefix_gives_a_prefix(text: str, cut: int) -> None:
    assert normalize(text).text.startswith(normalize(text[:cut]).text)


# --- the stream scanner's hold-back (holdback.py) ------------------------------------------
DEFAULT_OUTPUT = {"credit_card": "redact", "secret": "redact"}  # policies/default.yaml
_RULE_SETS = st.one_of(
    st.just(ALL_REDACT), st.just(DEFAULT_OUTPUT),
    st.sets(st.sampled_from(BUILTIN_KINDS), min_size=1).map(lambda ks: dict.fromkeys(ks, "mask")))
# Pieces of values, near misses and what sits next to them, so that a chunk boundary (or a
# cut) lands where a value is half written, ends, or turns out not to be one.
_FRAGMENTS = st.sampled_from([
    "sk", "sk-", "-proj-", "_live_", "gh", "p_", "AKIA", "AIza", "xox", "b-", "eyJ", ".eyJ",
    "github_pat_", "@", "bob", ".com", "example", "+44", " 20", "(555)", " 123-4567", "4111",
    " 1111", "1", "-", ".", ":", "::", "fe80", "10.0", ".0.1", "GB82", " WEST", "DE", "89",
    "secret_access_key", " = ", '"', "-----BEGIN ", "EC ", "PRIVATE KEY-----", "\n",
    "-----END ", " ", "  ", "\t", "x", "Hello", "0", "7", "\u200b", "\uff11", "\u2010", "\u0430",
    "\ufb01", "\u2474",
])
_ADVERSARIAL = st.lists(
    st.one_of(_FRAGMENTS, any_value, any_value.map(lambda v: v[: len(v) // 2]),
              st.text("0123456789 .-+()/:@_=abcdefxyzAKZ", max_size=6)),
    max_size=30).map("".join)


def _stream(scanner: StreamScanner, chunks: list[str]) -> tuple[str, list[str]]:
    """What the scanner sends for `chunks`, and what it held after each one."""
    sent, held = [], []
    for chunk in chunks:
        sent.append(scanner.feed(chunk))
        held.append(scanner.held)
    return "".join(sent) + scanner.flush(), held


@SETTINGS
@given(_RULE_SETS, _ADVERSARIAL, st.booleans(), st.data())
def test_streaming_any_rules_equals_one_shot_scan(rules: dict[str, str], text: str,
                                                  by_character: bool,
                                                  data: st.DataObject) -> None:
    expected = scan(text, rules, Redactor(), phase="output")
    chunks = list(text) if by_character else chunked(data.draw, text)
    scanner = StreamScanner(rules, Redactor())
    out, _ = _stream(scanner, chunks)
    assert out == expected.text
    assert scanner.findings == expected.findings


@SETTINGS
@given(_RULE_SETS, _ADVERSARIAL, st.data())
def test_what_is_held_is_bounded_by_the_longest_pattern(rules: dict[str, str], text: str,
                                                        data: st.DataObject) -> None:
    _, held = _stream(StreamScanner(rules, Redactor()), chunked(data.draw, text))
    limit = max_held(tuple(rules))
    assert all(len(h) <= limit for h in held)


_PROSE = st.text("abcdefghijklmnopqrstuvwxyz ,.!?'\n", max_size=200)
_KEY_PREFIX = re.compile(r"s|sk|r|rk|g|gh|gh[pousr]|gi|git|gith|githu|github|x|xo|xox|xox[abprs]"
                         r"|e|ey")


@SETTINGS
@given(_PROSE, st.data())
def test_default_rules_hold_back_only_a_word_that_may_begin_a_key(text: str,
                                                                  data: st.DataObject) -> None:
    chunks = chunked(data.draw, text)
    _, held = _stream(StreamScanner(DEFAULT_OUTPUT, Redactor()), chunks)
    sent_so_far = ""
    for chunk, h in zip(chunks, held, strict=True):
        sent_so_far += chunk
        word = re.search(r"[a-z]*\Z", sent_so_far).group()
        assert h == "" or (h == word and _KEY_PREFIX.fullmatch(word)), (sent_so_far, h)


@SETTINGS
@given(_PROSE, st.data())
def test_email_rules_hold_back_at_most_the_last_word(text: str, data: st.DataObject) -> None:
    chunks = chunked(data.draw, text)
    _, held = _stream(StreamScanner({"email": "redact"}, Redactor()), chunks)
    sent_so_far = ""
    for chunk, h in zip(chunks, held, strict=True):
        sent_so_far += chunk
        assert h == re.search(r"[a-z.]*\Z", sent_so_far).group()


@SETTINGS
@given(_RULE_SETS, _ADVERSARIAL, st.data())
def test_chunk_filter_sends_no_empty_delta_and_the_one_shot_text(
        rules: dict[str, str], text: str, data: st.DataObject) -> None:
    chunks = ChunkFilter("chat", rules, Redactor())
    sent = []
    for piece in chunked(data.draw, text):
        out = chunks.feed({"id": "c", "choices": [
            {"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        if out is None:
            continue
        assert out["choices"], out
        assert all(c["delta"]["content"] != "" or piece == "" for c in out["choices"])
        sent.extend(c["delta"]["content"] for c in out["choices"])
    final = chunks.feed({"id": "c", "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]})
    assert final is not None
    sent.append(final["choices"][0]["delta"].get("content") or "")
    assert "".join(sent) == scan(text, rules, Redactor(), phase="output").text


@SETTINGS
@given(_RULE_SETS, _ADVERSARIAL)
def test_what_a_prefix_settles_before_its_open_tail_is_what_the_whole_text_has(
        rules: dict[str, str], text: str) -> None:
    # holdback.py on its own: for every prefix, the candidates that end before its open tail
    # (moved back before any candidate crossing it) are those of the whole text, and no
    # candidate of the whole text crosses that point (PEM blocks: held apart, by the scanner)
    norm = normalize(text).text
    assume("-----BEGIN" not in norm)
    kinds = tuple(rules)
    whole = detect_normalized(norm, kinds)
    for i in range(1, len(norm) + 1):
        prefix = norm[:i]
        found = detect_normalized(prefix, kinds)
        cut = open_tail_start(prefix, 0, kinds)
        moved = True
        while moved:
            moved = False
            for f in found:
                if f.start < cut < f.end:
                    cut, moved = f.start, True
        assert sorted(f for f in found if f.end <= cut) == \
            sorted(f for f in whole if f.end <= cut), prefix
        assert not any(f.start < cut < f.end for f in whole), prefix
