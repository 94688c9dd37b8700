"""How much of a stream's text the output scanner must hold back: the open tail.

A character may be sent once no finding that contains it, or looks at it, can still change
with the text still to come. `open_tail_start(text, pos, kinds)` is where the text that may
still become (part of) a finding begins: the leftmost index from which the rest of `text` is
a beginning of a match of one of `kinds` (the match itself, its lookahead, or its validator's
look at the next character). Everything before it can be scanned and sent now.

The tails are written from the detectors' own patterns (`detectors.py`), as the set of every
prefix of a match, widened where that keeps them simple, never narrowed (holding too much
only delays; holding too little could send a value before it is recognised):

    credit_card, us_ssn, IPv4   digits with single separators: `4111 1111 11`, `10.0.`
    phone                       `+`, `(` or a digit, then digits, `()` and single separators
    iban                        two capitals at a word start, two digits, then groups
    IPv6                        hex groups and colons at a word start: `fe80:`, `::1.`
    email                       a run of local-part characters (any word!), then `@domain`
    secret                      a word that is a prefix of a key (`s`, `sk`, `gh`, `AKI`) or
                                one being written (`sk-abc`, `eyJhb.eyJ`), the value after
                                `secret_access_key =`, and a PEM header being written

So with the default output rules (credit_card, secret) `Hello` is sent at once: no card and
no key can contain it. With `email` a trailing word is held until a character that cannot be
in an address (a space, a comma) arrives. The tails never contain a line break, so a search
starts after the last one; each is bounded by its kind's longest match (`MAX_TAIL`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.pii.detectors import MAX_TOKEN_LEN, PEM_MAX

# The longest text an open match of each kind covers: the longest candidate and what its
# lookahead or validator reads after it (the tail patterns below may be looser).
MAX_TAIL = {
    "credit_card": 64, "us_ssn": 64, "iban": 48, "phone": 121,
    "ip_address": 64,  # IPv6: 45 characters and a look at 2 more; IPv4 within the digit tail
    "email": 607,  # 65 local characters (the 65th says "too long"), @, a 540-character domain
    "secret": 5420,  # a JWT: eyJ + 1000 + . + eyJ + 3000 + . + 1400, and a look at 1 more
}


def _prefixes(literal: str, then: str = "") -> str:
    """A pattern for every non-empty prefix of `literal`, and `literal` followed by what
    `then` matches (`then` covers every non-empty prefix of what may follow)."""
    out = f"(?:{then})?" if then else ""
    for ch in reversed(literal[1:]):
        out = f"(?:{re.escape(ch)}{out})?"
    return re.escape(literal[0]) + out


_DIGITS = r"[0-9](?:[ .\-]?[0-9]){0,31}[ .\-]?"
_LIVE_OR_TEST = "|".join(_prefixes(mode, _prefixes("_", "[A-Za-z0-9]{0,250}"))
                         for mode in ("live", "test"))  # Stripe's sk_live_, rk_test_, ...
_TAILS = {
    # `[0-9]{12,18}`, `3-4-4-4`-like groups, `123-45-6789`, `10.0.0.1` and the separator the
    # lookahead reads after them
    "credit_card": _DIGITS,
    "us_ssn": _DIGITS,
    "phone": r"[+(0-9](?:[0-9()]|[ .\-/](?![ .\-/])){0,120}",
    # the country code starts a word (`(?<![A-Za-z0-9][A-Z][A-Z][0-9])`)
    "iban": r"(?<![A-Za-z0-9])[A-Z](?:[A-Z](?:[0-9](?:[0-9](?: ?[A-Z0-9]){0,32} ?)?)?)?",
    "ip_address": _DIGITS + r"|(?<![A-Za-z0-9_:.])(?=[0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){0,8}"
                            r"(?:[0-9A-Fa-f]{1,4}\.?|[0-9]{1,3}(?:\.[0-9]{0,3}){0,3})?",
    "email": r"[A-Za-z0-9._%+\-]{1,65}(?:@[A-Za-z0-9.\-]{0,540})?",
    "secret": "|".join([
        # key prefixes at a word start (`_token` in detectors.py), written or being written
        r"(?<![A-Za-z0-9_\-])(?:"
        + _prefixes("sk", r"-[A-Za-z0-9_\-]{0,250}|" + _prefixes("_", _LIVE_OR_TEST)) + "|"
        + _prefixes("rk_", _LIVE_OR_TEST) + "|"
        + _prefixes("AKIA", "[A-Z0-9]{0,16}") + "|" + _prefixes("ASIA", "[A-Z0-9]{0,16}")
        + "|" + _prefixes("AIza", r"[0-9A-Za-z_\-]{0,35}") + "|"
        + _prefixes("gh", r"[pousr](?:_[A-Za-z0-9]{0,255})?") + "|"
        + _prefixes("github_pat_", "[A-Za-z0-9_]{0,255}") + "|"
        + _prefixes("xox", r"[abprs](?:-[A-Za-z0-9\-]{0,250})?") + "|"
        + _prefixes("eyJ", r"[A-Za-z0-9_\-]{0,1000}(?:\.(?:"
                    + _prefixes("eyJ", r"[A-Za-z0-9_\-]{0,3000}(?:\.[A-Za-z0-9_\-]{0,1400})?")
                    + ")?)?")
        + ")",
        # a PEM header being written; a whole one is held by the scanner until its END line
        _prefixes("-----BEGIN ", r"[A-Z0-9 \-]{0,90}"),
    ]),
}
# The value named by `secret_access_key = ` (`_AWS_SECRET`), held from the name on. The name
# may have been sent already (it is not a finding): this one is searched from `_LOOKBACK`
# characters before the unsent text, and then all of that text is held.
_AWS_TAIL = re.compile(r"(?:ecret|ECRET)[_\-]?(?:access|ACCESS|Access)[_\-]?(?:key|KEY|Key)"
                       r"[\"']? ?[=:] ?[\"']?[A-Za-z0-9/+]{0,40}\Z")
_LOOKBACK = 32  # more than the longest name before a value: `ECRET_ACCESS_KEY" = "` (21)
# The longest text one finding or tail of a kind spans: a PEM block for secrets; for person
# and location (names span spaces), the longest line the scanner holds whole.
LONGEST = {**MAX_TAIL, "secret": PEM_MAX, "person": 2 * MAX_TOKEN_LEN,
           "location": 2 * MAX_TOKEN_LEN}
_COMPILED: dict[tuple[str, ...], tuple[re.Pattern[str] | None, int]] = {}


def _tail_pattern(kinds: tuple[str, ...]) -> tuple[re.Pattern[str] | None, int]:
    """The tails of `kinds` as one pattern anchored at the end, and the longest of them
    (compiled once per set of kinds; cached under the tuple as given, for a fast lookup)."""
    found = _COMPILED.get(kinds)
    if found is None:
        key = tuple(sorted(set(kinds) & _TAILS.keys()))
        found = _COMPILED.get(key)
        if found is None:
            body = "|".join(f"(?:{_TAILS[k]})" for k in key)
            found = (re.compile(f"(?:{body})\\Z"), max(MAX_TAIL[k] for k in key)) if key \
                else (None, 0)
            _COMPILED[key] = found
        _COMPILED[kinds] = found
    return found


def open_tail_start(text: str, pos: int, kinds: Iterable[str]) -> int:
    """The leftmost index `i >= pos` from which `text[i:]` may still grow into (or be looked
    at by) a finding of `kinds`; `len(text)` when nothing may. `text` is normalised text
    (`normalize.py`); characters before `pos` are only read as context."""
    kinds = kinds if isinstance(kinds, tuple) else tuple(kinds)
    pattern, longest = _tail_pattern(kinds)
    if pattern is None:
        return len(text)
    line = max(text.rfind("\n"), text.rfind("\r")) + 1  # no tail holds a line break
    m = pattern.search(text, max(pos, len(text) - longest, line))
    held = m.start() if m else len(text)
    if "secret" in kinds:
        start = max(pos - _LOOKBACK, line, 0)
        if text.find("ecret", start) >= 0 or text.find("ECRET", start) >= 0:
            m = _AWS_TAIL.search(text, start)
            if m:
                held = min(held, max(m.start(), pos))
    return held


def max_held(kinds: Iterable[str]) -> int:
    """The most a stream scanner of `kinds` holds: a tail and a finding that reaches into it.

    Only text where candidates overlap in a chain (`a@b.cc@b.cc@b.cc...`) could make it hold
    more; there it cuts at the tail anyway, the one place where a stream may differ from the
    one-shot scan."""
    return 2 * max((LONGEST[k] for k in kinds if k in LONGEST), default=0)
