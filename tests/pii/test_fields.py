"""The walker reaches every text of a body; URLs and `data:` URLs by the text they carry; values
split across fields are found; token arrays are named."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.pii import fields, messages_fields, urls
from gateway.pii.actions import PiiBlockedError, Redactor
from gateway.pii.body_scan import scan_texts
from gateway.pii.fields import token_array_field, walk_response_texts, walk_texts
from gateway.pii.policy import redact_request, redact_response
from tests.pii.bodies import REQUESTS, RESPONSES, data_url

MARK = "mark-7f3a"  # stands for the text a user wrote; nothing else in the bodies holds it
ALL = dict.fromkeys(("email", "phone", "credit_card", "us_ssn", "iban", "ip_address",
                     "secret"), "redact")


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any, Any]]:
    """(schema path, value, container, key) of every value at any depth."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        where = (f"{path}.{key}" if path else key) if isinstance(node, dict) else f"{path}[]"
        yield where, value, node, key
        if isinstance(value, dict | list):
            yield from _nodes(value, where)


def _leaves(node: Any) -> Iterator[tuple[str, str, Any, Any]]:
    """(schema path, value, container, key) of every string leaf."""
    return ((p, v, c, k) for p, v, c, k in _nodes(node) if isinstance(v, str))


def _listed(path: str, listed: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[")
               for p in listed)


M = messages_fields
LISTED = {  # (side, endpoint) -> the paths listed as not text
    "request": fields.NOT_TEXT + fields.BINARY + fields.URLS + fields.RESPONSES_NOT_TEXT
    + fields.RESPONSES_BINARY + fields.RESPONSES_URLS,
    "response": fields.RESPONSE_NOT_TEXT + fields.RESPONSE_BINARY + fields.RESPONSE_URLS
    + fields.RESPONSES_RESPONSE_NOT_TEXT + fields.RESPONSES_RESPONSE_BINARY
    + fields.RESPONSES_RESPONSE_URLS,
    ("request", "messages"): M.NOT_TEXT + M.SIGNED + M.BINARY + M.URLS,
    ("response", "messages"): M.RESPONSE_NOT_TEXT + M.RESPONSE_SIGNED,
}


def _listed_for(side: str, endpoint: str) -> tuple[str, ...]:
    return LISTED.get((side, endpoint), LISTED[side])  # type: ignore[return-value]


CASES = [("request", e, REQUESTS[e], walk_texts, _listed_for("request", e)) for e in REQUESTS] \
    + [("response", e, RESPONSES[e], walk_response_texts, _listed_for("response", e))
       for e in RESPONSES]


@pytest.mark.parametrize(("side", "endpoint", "build", "walk", "listed"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_string_is_scanned_or_listed_as_not_text(
        side: str, endpoint: str, build: Any, walk: Any, listed: tuple[str, ...]) -> None:
    """A text field added to the maximal bodies (tests/pii/bodies.py) is scanned unless it is
    listed as not text; one listed by mistake (it carries the user's text) fails here."""
    body = build(MARK, template=True) if endpoint == "chat" and side == "request" \
        else build(MARK)
    visited = {(id(f.container), f.key) for f in walk(body, endpoint) if not f.is_key}
    for path, value, container, key in _leaves(body):
        if (id(container), key) in visited:
            continue
        assert _listed(path, listed), f"{path} is neither scanned nor listed as not text"
        if _listed(path, M.SIGNED + M.RESPONSE_SIGNED):
            continue  # signed thinking: text kept as it was signed (its own test below)
        assert MARK not in value and MARK not in (urls.text_of(value) or ""), \
            f"{path} carries text but is listed as not text"


def test_every_listed_path_exists_in_the_maximal_bodies() -> None:
    """The not-text lists name real fields (a stale entry could hide a future text field)."""
    paths = {p for e in REQUESTS for p, *_ in _nodes(REQUESTS[e](MARK, **(
        {"template": True} if e == "chat" else {})))}
    paths |= {p for e in RESPONSES for p, *_ in _nodes(RESPONSES[e](MARK))}
    for listed in (*fields.NOT_TEXT, *fields.BINARY, *fields.URLS, *fields.RESPONSE_NOT_TEXT,
                   *fields.RESPONSE_BINARY, *fields.RESPONSE_URLS, *M.NOT_TEXT, *M.SIGNED,
                   *M.BINARY, *M.URLS, *M.RESPONSE_NOT_TEXT, *M.RESPONSE_SIGNED,
                   *fields.RESPONSES_NOT_TEXT, *fields.RESPONSES_BINARY,
                   *fields.RESPONSES_URLS, *fields.RESPONSES_RESPONSE_NOT_TEXT,
                   *fields.RESPONSES_RESPONSE_BINARY, *fields.RESPONSES_RESPONSE_URLS):
        assert any(p == listed or p.startswith((listed + ".", listed + "["))
                   for p in paths), listed


def test_a_url_is_scanned_by_the_text_it_carries() -> None:
    body = REQUESTS["chat"]("bob@example.com")
    new, _ = redact_request(body, "chat", {"email": "redact"}, Redactor())
    parts = new["messages"][2]["content"]
    assert parts[1]["image_url"]["url"] == "https://img.example.com/a.png?who=[EMAIL_1]"
    assert parts[2]["image_url"]["url"] == data_url("[EMAIL_1]")
    assert parts[3] == body["messages"][2]["content"][3]  # an image: binary, untouched
    assert parts[5]["file"]["file_data"] == data_url("[EMAIL_1]")
    assert "bob@example.com" not in repr(new)
    assert "bob%40example.com" not in repr(new)
    assert base64.b64encode(b"bob@example.com").decode() not in repr(new)


@pytest.mark.parametrize(("url", "text"), [
    ("https://a.example/x?e=bob%40example.com&n=1", "https://a.example/x?e=bob@example.com&n=1"),
    ("https://a.example/plain", "https://a.example/plain"),
    ("data:,call%20555-123-4567", "call 555-123-4567"),
    ("data:text/plain;charset=utf-8;base64,aGk=", "hi"),
    ("data:application/json;base64,e30=", "{}"),
    ("data:image/svg+xml;base64,PHN2Zz4=", "<svg>"),
    ("data:image/png;base64,iVBORw0KGgo=", None),
    ("data:application/pdf;base64,JVBERi0=", None),
    ("data:text/plain;base64,not base64!", "data:text/plain;base64,not base64!"),
])
def test_text_of_a_url(url: str, text: str | None) -> None:
    assert urls.text_of(url) == text
    if text is not None:
        assert urls.rebuild(url, text) in (url, text) or urls.text_of(urls.rebuild(url, text)) \
            == text


def test_names_of_free_form_entries_are_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"bob@example.com": "a", "plain": "x"}}
    new, _ = redact_request(body, "chat", {"email": "redact"}, Redactor())
    assert new["metadata"] == {"[EMAIL_1]": "a", "plain": "x"}
    assert list(new) == list(body)


@pytest.mark.parametrize(("endpoint", "body", "name"), [
    ("completions", {"prompt": [1, 2, 3]}, "prompt"),
    ("completions", {"prompt": [[1, 2], [3]]}, "prompt"),
    ("completions", {"prompt": "text"}, None),
    ("completions", {"prompt": ["a", "b"]}, None),
    ("embeddings", {"input": [5, 6]}, "input"),
    ("embeddings", {"input": [[5], [6]]}, "input"),
    ("embeddings", {"input": "x"}, None),
    ("chat", {"messages": [1, 2]}, None),
])
def test_token_arrays_are_named(endpoint: str, body: dict, name: str | None) -> None:
    assert token_array_field(body, endpoint) == name


# --- values split across fields ---------------------------------------------------------
SPLITS = [
    ("card over two messages", ["my card is 4111 1111", "1111 1111 thanks"], "credit_card"),
    ("card, space at the seam", ["my card is 4111 1111 ", "1111 1111"], "credit_card"),
    ("card without spaces", ["41111111", "11111111"], "credit_card"),
    ("card in four pieces", ["4111", " 1111", " 1111", " 1111"], "credit_card"),
    ("email at the @", ["write to bob@", "example.com please"], "email"),
    ("ssn", ["ssn 219-09", "-9999"], "us_ssn"),
    ("phone", ["call 555", "-123-4567"], "phone"),
]


@pytest.mark.parametrize(("texts", "kind"), [s[1:] for s in SPLITS], ids=[s[0] for s in SPLITS])
def test_a_value_split_across_fields_is_redacted_as_a_whole(texts: list[str],
                                                           kind: str) -> None:
    redactor = Redactor()
    new, found = scan_texts(texts, ALL, redactor)
    result = [t if n is None else n for t, n in zip(texts, new, strict=True)]
    joined = "".join(result)
    assert f"[{kind.upper()}_1]" in joined
    assert not re.search(r"\d{4}", joined.replace(f"[{kind.upper()}_1]", "")) or kind != \
        "credit_card"
    assert redactor.summary() == {kind: {"count": 1, "action": "redact"}}
    assert sum(1 for f in found if f) >= 2  # every piece is reported where it is


def test_a_split_value_is_blocked() -> None:
    with pytest.raises(PiiBlockedError):
        scan_texts(["card 4111 1111", "1111 1111"], {"credit_card": "block"}, Redactor())


@pytest.mark.parametrize("texts", [
    ["order 5", "4111111111111111"],  # a digit before it in the previous field
    ["4111111111111111", "7 items"],
    ["mail bob@example.com", "com is fine"],
], ids=["digit before", "digit after", "letters after"])
def test_each_field_is_still_scanned_as_if_alone(texts: list[str]) -> None:
    new, _ = scan_texts(texts, ALL, Redactor())
    assert any(n is not None and "_1]" in n for n in new)


def test_unrelated_fields_do_not_join_into_a_value() -> None:
    texts = ["You are a helpful assistant.", "Summarise 12 points", "about 3 topics", "ok"]
    assert scan_texts(texts, ALL, Redactor()) == ([None] * 4, [[], [], [], []])


def test_long_fields_are_joined_only_at_their_ends() -> None:
    texts = ["x " * 500 + "card 4111 1111", "1111 1111 " + "y " * 500]
    new, _ = scan_texts(texts, ALL, Redactor())
    assert new[0] is not None and new[0].endswith("card [CREDIT_CARD_1]")
    assert new[1] is not None and new[1].startswith(" y")


def test_nothing_found_returns_the_same_body_without_a_copy() -> None:
    body = REQUESTS["chat"]("nothing to see")
    before = copy.deepcopy(body)
    new, found = redact_request(body, "chat", ALL, Redactor())
    assert new is body and found == [] and body == before


def test_a_response_is_redacted_in_every_text_field() -> None:
    resp = RESPONSES["chat"]("mail bob@example.com")
    new, _ = redact_response(resp, "chat", {"email": "redact"}, Redactor())
    assert "bob@example.com" not in repr(new) and "bob%40example.com" not in repr(new)
    assert new["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"


def test_signed_thinking_is_never_a_policy_field_but_is_scanned_when_stored() -> None:
    """Anthropic checks a thinking block's signature over its text: a policy never rewrites
    it (request or answer); the stored view (audit bodies, traces) scans it."""
    body, answer = REQUESTS["messages"](MARK), RESPONSES["messages"](MARK)
    for walk, value in ((walk_texts, body), (walk_response_texts, answer)):
        policy = {f.path for f in walk(value, "messages")}
        stored = {f.path for f in walk(value, "messages:stored")}
        assert not any(p.endswith((".thinking", ".signature", ".data")) for p in policy)
        assert any(p.endswith(".thinking") for p in stored)
