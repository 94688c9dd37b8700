"""Property tests (hypothesis): redaction leaves no value behind, restore inverts it, and
streaming gives exactly the one-shot result for any chunking."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pii.actions import Redactor, scan
from gateway.pii.detectors import BUILTIN_KINDS, detect, is_soft_space, pem_blocks
from gateway.pii.normalize import normalize
from gateway.pii.restore import StreamRestorer, StreamScanner, restore
from tests.pii.strategies import VALUES, chunked, documents, loose_separators

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
