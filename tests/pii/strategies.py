"""Hypothesis strategies for PII values (valid by construction) and the text around them."""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import strategies as st

from gateway.pii.detectors import luhn_ok

LOWER = "abcdefghijklmnopqrstuvwxyz"
ALNUM = LOWER + LOWER.upper() + "0123456789"


def wide(text: str) -> str:
    """`text` in full-width forms (U+FF01..U+FF5E), space as the ideographic space."""
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c
                   for c in text)


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def iban_complete(country: str, bban: str) -> str:
    """A valid IBAN: the check digits computed for `country` and `bban`."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def group(value: str, sizes: list[int], sep: str) -> str:
    parts, pos = [], 0
    for size in sizes:
        parts.append(value[pos:pos + size])
        pos += size
    if pos < len(value):
        parts.append(value[pos:])
    return sep.join(p for p in parts if p)


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(st.text(ALNUM + "._+-", min_size=1, max_size=20).filter(
        lambda s: s[0] not in "." and s[-1] != "."))
    labels = draw(st.lists(st.text(LOWER + "0123456789", min_size=1, max_size=12),
                           min_size=1, max_size=3))
    tld = draw(st.sampled_from(["com", "org", "io", "co.uk", "de", "example"]))
    return f"{local}@{'.'.join(labels)}.{tld}"


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("55", 16), ("2221", 16),
                                           ("34", 15), ("37", 15), ("6011", 16), ("35", 16)]))
    if prefix == "35":
        prefix = "3530"
    body = prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1,
                                 max_size=length - len(prefix) - 1))
    number = luhn_complete(body)
    style = draw(st.sampled_from(["", " ", "-"]))
    if not style:
        return number
    return group(number, [4, 6, 5] if length == 15 else [4, 4, 4, 4], style)


@st.composite
def ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    sep = draw(st.sampled_from(["-", " "]))
    return f"{area:03d}{sep}{draw(st.integers(1, 99)):02d}{sep}{draw(st.integers(1, 9999)):04d}"


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country, n = draw(st.sampled_from([("DE", 18), ("FR", 23), ("GB", 18), ("NL", 14),
                                       ("ES", 20), ("IT", 23), ("BE", 12)]))
    bban = draw(st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=n, max_size=n))
    value = iban_complete(country, bban)
    return group(value, [4] * 9, " ") if draw(st.booleans()) else value


@st.composite
def ips(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
    addr = ipaddress.IPv6Address(draw(st.integers(1, 2**128 - 1)))
    text = addr.compressed if draw(st.booleans()) else addr.exploded
    return text if any(c.isdigit() for c in text) else "2001:db8::" + "1"


@st.composite
def phones(draw: st.DrawFn) -> str:
    d = lambda n: draw(st.text("0123456789", min_size=n, max_size=n))  # noqa: E731
    area = str(draw(st.integers(2, 9))) + d(2)
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return f"({area}) {d(3)}-{d(4)}"
    if kind == 1:
        sep = draw(st.sampled_from(["-", ".", " "]))
        return f"{area}{sep}{d(3)}{sep}{d(4)}"
    if kind == 2:
        return f"+44 20 {d(4)} {d(4)}"
    if kind == 3:
        return f"+1 ({area}) {d(3)}-{d(4)}"
    if kind == 4:
        return f"0{draw(st.integers(1, 9))}{d(1)} {d(7)}"
    return f"+49{draw(st.integers(1, 9))}{d(8)}"


@st.composite
def secrets(draw: st.DrawFn) -> str:
    tok = lambda n, chars=ALNUM: draw(st.text(chars, min_size=n, max_size=n))  # noqa: E731
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return "sk-proj-" + tok(40) + "1"
    if kind == 1:
        return "sk-gw-" + tok(43, ALNUM + "_-")
    if kind == 2:
        return "AKIA" + tok(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    if kind == 3:
        return "ghp_" + tok(36)
    if kind == 4:
        return "xoxb-" + tok(24, "0123456789") + "-" + tok(12)
    if kind == 5:
        return "sk_live_" + tok(24)
    if kind == 6:
        return "AIza" + tok(35, ALNUM + "_-")
    if kind == 7:
        return f"eyJ{tok(20)}.eyJ{tok(30)}.{tok(43, ALNUM + '_-')}"
    label = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH "]))
    lines = draw(st.lists(st.text(ALNUM + "+/", min_size=1, max_size=64), min_size=1,
                          max_size=4))
    body = "\n".join(lines)
    return f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"


VALUES = {"email": emails(), "credit_card": cards(), "us_ssn": ssns(), "iban": ibans(),
          "ip_address": ips(), "phone": phones(), "secret": secrets()}
any_value = st.one_of(*VALUES.values())
words = st.text(LOWER, min_size=1, max_size=10)
# Separators as prose puts them between a value and what follows it.
separators = st.sampled_from([" and ", ", ", ".\n", "\n", " / ", "; ", " (", ") ", ": "])
# Anything, including single spaces and digits next to values: for stream equivalence.
loose_separators = st.one_of(separators, st.sampled_from([" ", "  ", "\t", " 7 ", "-", ""]))


@st.composite
def documents(draw: st.DrawFn, seps: st.SearchStrategy[str] = separators
              ) -> tuple[str, list[str]]:
    """A text mixing words and PII values; returns the text and the values in it."""
    parts, values = [], []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 9)) == 0:  # a secret known by the name it is assigned to
            value = draw(st.text(ALNUM + "/+", min_size=40, max_size=40))
            name = draw(st.sampled_from(["aws_secret_access_key = ", "AWS_SECRET_ACCESS_KEY=",
                                         '"aws_secret_access_key": "']))
            values.append(value)
            parts.append(name + value + ('"' if name.endswith('"') else ""))
        elif draw(st.booleans()):
            value = draw(any_value)
            values.append(value)
            parts.append(value)
        else:
            parts.append(" ".join(draw(st.lists(words, min_size=1, max_size=5))))
        parts.append(draw(seps))
    return "".join(parts), values


def chunked(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=12))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]
