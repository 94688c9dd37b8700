"""Built-in PII detectors: pure functions over text, patterns compiled once at import.

`detect(text, kinds)` normalises the text (`normalize.py`: NFKC per character, format
characters dropped, dashes, digits and look-alike letters folded), runs the detectors of the
requested kinds, maps the spans back to the ORIGINAL text and resolves overlaps: the longer
finding wins, then the kind earlier in `PRIORITY`, then the earlier start. The `find_*`
functions take normalised text.

Bounded time on hostile input (4 MB of digits, `@`, dots): every quantifier is bounded, no
quantified group can match the same text in two ways, and each detector starts from a rare
anchor: a literal (`@`, `:`, a key prefix), which the regex engine searches with a fast
loop, or a character class written with `_first`, which CPython compiles to a bitmap and
skips in a tight C loop (about 2 ms/MB, against 5-15 ms/MB for a plain range class).

Every pattern keeps to one rule: a match never contains whitespace other than a single space
that `is_soft_space` allows (between two characters of `[0-9A-Z)]` and `[0-9A-Z(+]`, or next
to `=` or `:`), and looks at most 3 characters around itself; PEM private key blocks are the
one exception. The stream scanner holds back what may still become a match by patterns
written from these (`holdback.py`): a change here needs its change there (the property tests
in tests/pii/test_properties.py check the two agree).
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import NamedTuple

from gateway.errors import RedactionUnavailable
from gateway.pii import presidio
from gateway.pii.normalize import normalize

BUILTIN_KINDS = ("email", "phone", "credit_card", "us_ssn", "iban", "ip_address", "secret")
NER_KINDS = ("person", "location")
KINDS = BUILTIN_KINDS + NER_KINDS
# Overlap tie-break after length: lower wins.
PRIORITY = {"secret": 0, "credit_card": 1, "iban": 2, "us_ssn": 3, "email": 4,
            "ip_address": 5, "phone": 6, "person": 7, "location": 8}

# The longest finding of a built-in detector other than a PEM block (a JWT: 3+1000+1+3+3000
# +1+1400 characters, rounded up); PEM blocks are at most PEM_MAX long.
MAX_TOKEN_LEN = 6144
PEM_MAX = 16384


class Finding(NamedTuple):
    """A detected value: `text[start:end]` (end exclusive) is of kind `kind`."""

    kind: str
    start: int
    end: int


class DetectorError(RedactionUnavailable):
    """A detector failed or is missing: the request must be refused, never passed on."""


def _first(cls: str) -> str:
    """A first-character class compiled as a bitmap (3+ ranges) that matches only `cls`."""
    return f"[\\x00\\x02\\x04{cls}](?<=[{cls}])"


# --- email ------------------------------------------------------------------------------
_LOCAL = "A-Za-z0-9._%+\\-"
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# From the `@` (a literal: fast to search for) to the end of the domain.
_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9\-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9\-])")
_LOCAL_REVERSED = re.compile(f"[{_LOCAL}]{{1,64}}")  # the local part, read backwards


def find_emails(text: str) -> list[Finding]:
    out = []
    for m in _EMAIL_DOMAIN.finditer(text):
        at = m.start()
        back = text[max(0, at - 65):at][::-1]
        local = _LOCAL_REVERSED.match(back)
        if local is None or (local.end() == 64 and len(back) == 65 and back[64] in _LOCAL_CHARS):
            continue  # no local part, or one longer than 64 characters
        start = at - local.end()
        while text[start] == ".":  # an ellipsis before the address is not part of it
            start += 1
        if start < at:
            out.append(Finding("email", start, m.end()))
    return out


# --- the digit-anchored kinds: phone, credit card, SSN, IBAN, IPv4 ----------------------
# One regex for all of them, so the text is walked once. The first character (a digit,
# `+` or `(`) is consumed by `_first`; each alternative checks it with a lookbehind. The
# alternatives have disjoint shapes; a candidate its validator rejects is retried with the
# other kinds at the same place.
_ALTERNATIVES = {
    "credit_card": (
        r"(?<=[0-9])(?<![0-9][0-9])(?<![0-9][ .\-][0-9])"
        r"(?:[0-9]{12,18}"
        r"|[0-9]{3}(?P<cs>[ .\-])[0-9]{4,6}(?:(?P=cs)[0-9]{3,5}){1,3}(?!(?P=cs)[0-9]))"
        r"(?![0-9])"
    ),
    "us_ssn": (
        r"(?<=[0-9])(?<![0-9][0-9])(?<![0-9][ \-][0-9])"
        r"[0-9]{2}(?P<ss>[ \-])[0-9]{2}(?P=ss)[0-9]{4}(?![0-9])(?![ \-][0-9])"
    ),
    # the match starts at the first check digit; the country code is the 2 letters before
    "iban": (
        r"(?<=(?:COUNTRIES)[0-9])(?<![A-Za-z0-9][A-Z][A-Z][0-9])"
        r"[0-9](?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
    ),
    "ip_address": (
        r"(?<=[0-9])(?<![A-Za-z0-9_.][0-9])"
        r"[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![A-Za-z0-9_])(?!\.[0-9])"
    ),
    "phone": (
        r"(?<![0-9A-Za-z_+.\-/][0-9+(])(?<![0-9][ .\-][0-9+(])"
        r"(?:"
        # international: +CC then groups, or +CC and the number in one piece
        r"(?<=\+)[1-9][0-9]{0,3}(?:[ .\-](?:\([0-9]{1,4}\) ?)?[0-9]{1,10}){1,6}"
        r"|(?<=\+)[1-9][0-9]{6,14}"
        # North America: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567
        r"|(?<=\()[2-9][0-9]{2}\) ?[0-9]{3}[ .\-][0-9]{4}"
        r"|(?<=1)(?P<ns>[ .\-])[2-9][0-9]{2}(?P=ns)[0-9]{3}(?P=ns)[0-9]{4}"
        r"|(?<=[2-9])[0-9]{2}(?P<us>[ .\-])[0-9]{3}(?P=us)[0-9]{4}"
        # trunk 0: UK 020 7946 0958, DE 030 1234567, (030) 1234567, FR 01 23 45 67 89
        r"|(?<=\()0[1-9][0-9]{1,4}\) ?[0-9]{2,8}(?:[ \-][0-9]{2,8}){0,3}"
        r"|(?<=0)[1-9][0-9]{0,4}[ /\-][0-9]{2,8}(?:[ \-][0-9]{2,8}){0,3}"
        r"|(?<=0)[1-9](?:\.[0-9]{2}){4}"
        r")(?![0-9])(?![.\-/][0-9])"
    ),
}
DIGIT_KINDS = tuple(_ALTERNATIVES)
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_ALTERNATIVES["iban"] = _ALTERNATIVES["iban"].replace("COUNTRIES", "|".join(_IBAN_LENGTHS))
_COMBINED: dict[tuple[str, ...], re.Pattern[str]] = {}


def _combined(kinds: tuple[str, ...]) -> re.Pattern[str]:
    pattern = _COMBINED.get(kinds)
    if pattern is None:
        body = "|".join(f"(?P<{k}>{_ALTERNATIVES[k]})" for k in kinds)
        # Two cheap gates before the alternatives: a digit inside a run of digits starts
        # nothing, and every match has 6 more characters of this class after the first.
        pattern = _COMBINED[kinds] = re.compile(
            _first(r"0-9+(") + r"(?<![0-9][0-9])(?=[0-9A-Z ()./\-]{6})" + f"(?:{body})")
    return pattern


for _kind in DIGIT_KINDS:  # compile the one-kind and the all-kinds patterns at import
    _combined((_kind,))
_combined(DIGIT_KINDS)

_IBAN_DIGITS = {ord(c): str(i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    """ISO 13616: the IBAN with its first 4 characters moved to the end, letters read as
    10..35, is 1 modulo 97."""
    return int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 == 1


def issuer_ok(digits: str) -> bool:
    """Whether a card number's prefix and length belong to a known issuer range (Visa,
    Mastercard, Amex, Discover, UnionPay, Diners, JCB, Maestro)."""
    n, p2, p3, p4 = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:
        return n in (16, 19)
    if p2 == 62 or 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return n in (14, 16, 19)
    return p2 in (50, 56, 57, 58, 63, 67)  # Maestro: 13-19, the regex's range


def _card(text: str, start: int, end: int) -> Finding | None:
    digits = text[start:end].replace(" ", "").replace("-", "").replace(".", "")
    if issuer_ok(digits) and luhn_ok(digits):
        return Finding("credit_card", start, end)
    return None


def _ssn(text: str, start: int, end: int) -> Finding | None:
    area, group, serial = text[start:start + 3], text[start + 4:start + 6], text[start + 7:end]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return Finding("us_ssn", start, end)


def _iban(text: str, start: int, end: int) -> Finding | None:
    start -= 2  # the country code
    want = _IBAN_LENGTHS[text[start:start + 2]]
    stop, remaining = start, want
    for part in text[start:end].split(" "):  # cut the match at the country's length
        if len(part) >= remaining:
            stop += remaining
            break
        remaining -= len(part)
        stop += len(part) + 1
    else:
        return None
    after = text[stop:stop + 1]
    if after.isascii() and after.isalnum():
        return None  # the value runs on: not this IBAN
    if not iban_ok(text[start:stop].replace(" ", "")):
        return None
    return Finding("iban", start, stop)


def _ipv4(text: str, start: int, end: int) -> Finding | None:
    for octet in text[start:end].split("."):
        if len(octet) > 1 and (octet[0] == "0" or int(octet) > 255):
            return None
    return Finding("ip_address", start, end)


_PHONE_SEPARATORS = re.compile(r"[ .\-/]")


def _phone(text: str, start: int, end: int) -> Finding | None:
    value = text[start:end]
    if value[0] == "+":
        low, high, national = 8, 15, False
    elif value[0] == "0" or value.startswith("(0"):
        low, high, national = 9, 12, True
    else:
        low, high, national = 10, 11, False
    digits = sum(map(str.isdigit, value))
    while digits > high:  # `+44 20 7946 0958 1234`: drop trailing groups that do not fit
        cut = max((m.start() for m in _PHONE_SEPARATORS.finditer(value)), default=0)
        if cut == 0:
            return None
        value = value[:cut]
        digits = sum(map(str.isdigit, value))
    if digits < low:
        return None
    if national:  # groups of fewer than 3 digits only in the French 0X XX XX XX XX shape
        groups = [len(g) for g in re.findall("[0-9]+", value)]
        if min(groups[1:], default=0) < 3 and groups != [2, 2, 2, 2, 2]:
            return None
    return Finding("phone", start, start + len(value))


_VALIDATORS: dict[str, Callable[[str, int, int], Finding | None]] = {
    "credit_card": _card, "us_ssn": _ssn, "iban": _iban, "ip_address": _ipv4, "phone": _phone,
}


def find_digit_kinds(text: str, kinds: Collection[str] = DIGIT_KINDS) -> list[Finding]:
    """Findings of the digit-anchored `kinds`: phone, credit_card, us_ssn, iban, IPv4."""
    wanted = tuple(k for k in DIGIT_KINDS if k in kinds)
    if not wanted:
        return []
    pattern = _combined(wanted)
    out: list[Finding] = []
    pos = 0
    while pos <= len(text):
        for m in pattern.finditer(text, pos):
            kind = m.lastgroup or ""
            found = _VALIDATORS[kind](text, m.start(), m.end())
            if found is not None and found.end == m.end():
                out.append(found)
                continue
            # Rejected or cut short: retry the other kinds at the same place, then go on
            # from just after the candidate's start so nothing inside it is skipped.
            for other in wanted[wanted.index(kind) + 1:] if found is None else ():
                m2 = _combined((other,)).match(text, m.start())
                found = m2 and _VALIDATORS[other](text, m2.start(), m2.end())
                if found:
                    break
            if found:
                out.append(found)
            pos = found.end if found else m.start() + 1
            break
        else:
            return out
    return out


def find_phones(text: str) -> list[Finding]:
    return find_digit_kinds(text, ("phone",))


def find_cards(text: str) -> list[Finding]:
    return find_digit_kinds(text, ("credit_card",))


def find_ssns(text: str) -> list[Finding]:
    return find_digit_kinds(text, ("us_ssn",))


def find_ibans(text: str) -> list[Finding]:
    return find_digit_kinds(text, ("iban",))


# --- IPv6 -------------------------------------------------------------------------------
_HEX = "[0-9A-Fa-f]"
_IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])"
    rf"(?:{_HEX}{{0,4}}:){{2,7}}"
    rf"(?:[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}|{_HEX}{{1,4}})?"
    # not ending in a lone `:`, and not followed by more of an address (`addr: text` is ok)
    r"(?<![^:]:)(?![A-Za-z0-9_])(?!:[0-9A-Fa-f:])(?!\.[0-9])"
)
# Every IPv6 address has `::` or six colons with 1-4 hex digits between them (a literal
# first: fast to search; `12:00:03` and MAC addresses are not hints).
_IPV6_HINT = re.compile(rf":(?::|(?:{_HEX}{{1,4}}:){{5}})")
_IPV6_REACH = 46  # the longest candidate (45 characters) plus its lookbehind


def find_ipv6(text: str) -> list[Finding]:
    windows: list[list[int]] = []
    for hint in _IPV6_HINT.finditer(text):
        s, e = max(0, hint.start() - _IPV6_REACH), min(len(text), hint.end() + _IPV6_REACH)
        if windows and s <= windows[-1][1]:
            windows[-1][1] = e
        else:
            windows.append([s, e])
    out = []
    for s, e in windows:
        for m in _IPV6.finditer(text, s, e):
            value = m.group()
            if not any(c.isdigit() for c in value):
                continue  # `a::b`, `dead::beef`: code more often than addresses
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            out.append(Finding("ip_address", m.start(), m.end()))
    return out


def find_ips(text: str) -> list[Finding]:
    return find_digit_kinds(text, ("ip_address",)) + find_ipv6(text)


# --- secrets ----------------------------------------------------------------------------
def _token(prefix: str, body: str) -> re.Pattern[str]:
    """`prefix` then `body`, as a whole word. The literal prefix comes first so the regex
    engine searches for it fast; the left word boundary is a lookbehind after it."""
    literal = re.escape(prefix)
    return re.compile(f"{literal}(?<![A-Za-z0-9_\\-]{literal}){body}(?![A-Za-z0-9_\\-])")


_SK = _token("sk", r"(?:-[A-Za-z0-9_\-]{20,250}|_(?:live|test)_[A-Za-z0-9]{10,250})")
_SECRET_TOKENS = (
    _SK,  # OpenAI sk-/sk-proj-, Anthropic sk-ant-, our sk-gw-, Stripe sk_live_/sk_test_
    _token("rk_", r"(?:live|test)_[A-Za-z0-9]{10,250}"),  # Stripe restricted keys
    _token("AKIA", r"[A-Z0-9]{16}"),  # AWS access key ids
    _token("ASIA", r"[A-Z0-9]{16}"),
    _token("gh", r"[pousr]_[A-Za-z0-9]{36,255}"),  # GitHub
    _token("github_pat_", r"[A-Za-z0-9_]{22,255}"),
    _token("xox", r"[abprs]-[A-Za-z0-9\-]{10,250}"),  # Slack
    _token("AIza", r"[0-9A-Za-z_\-]{35}"),  # Google API keys
    _token("eyJ", r"[A-Za-z0-9_\-]{2,1000}\.eyJ[A-Za-z0-9_\-]{2,3000}\.[A-Za-z0-9_\-]{16,1400}"),
)
_AWS_SECRET = re.compile(
    r"(?:ecret|ECRET)[_\-]?(?:access|ACCESS|Access)[_\-]?(?:key|KEY|Key)[\"']? ?[=:] ?[\"']?"
    r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]{1,20} ){0,3})PRIVATE KEY-----")
_PEM_LINES = re.compile(r"(?:\r?\n[A-Za-z0-9+/=]{1,100}(?![^\r\n])){0,150}")


def find_secrets(text: str) -> list[Finding]:
    out = []
    for pattern in _SECRET_TOKENS:
        for m in pattern.finditer(text):
            value = m.group()
            if pattern is _SK and value[2] == "-" and len(value) < 35 and \
                    not any(c.isdigit() for c in value):
                continue  # `sk-` and a short word: a slug (`sk-learn-...`), not a key
            out.append(Finding("secret", m.start(), m.end()))
    if "ecret" in text or "ECRET" in text:
        out.extend(Finding("secret", m.start(1), m.end(1)) for m in _AWS_SECRET.finditer(text))
    if "-----BEGIN " in text:
        out.extend(Finding("secret", s, e) for s, e, _ in pem_blocks(text))
    return out


def pem_blocks(text: str, pos: int = 0) -> Iterator[tuple[int, int, bool]]:
    """`(start, end, closed)` of each PEM private key block: from BEGIN to its END when the
    first `-----END ` after the header is that END and the block fits in `PEM_MAX`
    characters (closed), else the header and the base64 lines after it (not closed)."""
    next_end = -2  # the first "-----END " at or after the current header; -1: none left
    m = _PEM_BEGIN.search(text, pos)
    while m:
        start, body = m.start(), m.end()
        if next_end != -1 and next_end < body:
            next_end = text.find("-----END ", body)
        end_marker = f"-----END {m.group(1)}PRIVATE KEY-----"
        if next_end != -1 and next_end + len(end_marker) - start <= PEM_MAX \
                and text.startswith(end_marker, next_end):
            stop, closed = next_end + len(end_marker), True
        else:
            stop, closed = _PEM_LINES.match(text, body).end(), False  # type: ignore[union-attr]
        yield start, stop, closed
        m = _PEM_BEGIN.search(text, stop)


# --- everything together ----------------------------------------------------------------
DETECTORS: dict[str, Callable[[str], list[Finding]]] = {
    "email": find_emails,
    "phone": find_phones,
    "credit_card": find_cards,
    "us_ssn": find_ssns,
    "iban": find_ibans,
    "ip_address": find_ips,
    "secret": find_secrets,
}


def _rank(f: Finding) -> tuple[int, int, int]:
    return (f.start - f.end, PRIORITY[f.kind], f.start)


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Non-overlapping findings sorted by start: of overlapping ones the longer wins, then
    the kind earlier in `PRIORITY`, then the earlier start."""
    ordered = sorted(findings, key=lambda f: (f.start, f.end))
    out: list[Finding] = []
    i = 0
    while i < len(ordered):  # one cluster of transitively overlapping findings at a time
        j, reach = i + 1, ordered[i].end
        while j < len(ordered) and ordered[j].start < reach:
            reach = max(reach, ordered[j].end)
            j += 1
        if j == i + 1:
            out.append(ordered[i])
        else:
            taken: list[Finding] = []
            for f in sorted(ordered[i:j], key=_rank):
                k = bisect_left(taken, f.start, key=lambda t: t.start)
                if (k == 0 or taken[k - 1].end <= f.start) and \
                        (k == len(taken) or f.end <= taken[k].start):
                    taken.insert(k, f)
            out.extend(taken)
        i = j
    return out


def detect_normalized(norm: str, kinds: Collection[str]) -> list[Finding]:
    """Findings in normalised text, overlaps not yet resolved."""
    found = find_digit_kinds(norm, kinds)
    if "ip_address" in kinds:
        found.extend(find_ipv6(norm))
    if "email" in kinds:
        found.extend(find_emails(norm))
    if "secret" in kinds:
        found.extend(find_secrets(norm))
    ner = [k for k in NER_KINDS if k in kinds]
    if ner:
        if not presidio.available():
            raise DetectorError(f"the {ner[0]} detector needs presidio, which is not installed")
        found.extend(Finding(k, s, e) for k, s, e in presidio.detect(norm, ner))
    return found


def detect(text: str, kinds: Collection[str] = BUILTIN_KINDS) -> list[Finding]:
    """Non-overlapping findings of `kinds` in `text`, sorted, in ORIGINAL offsets.

    Raises `DetectorError` (503 `redaction_unavailable`) if a detector fails or is missing.
    """
    unknown = [k for k in kinds if k not in PRIORITY]
    if unknown:
        raise ValueError(f"unknown PII kind: {unknown[0]}")
    if not text:
        return []
    try:
        norm = normalize(text)
        resolved = resolve_overlaps(detect_normalized(norm.text, kinds))
    except DetectorError:
        raise
    except Exception as exc:  # fail closed: text is never passed on unscanned
        raise DetectorError(f"a PII detector failed ({type(exc).__name__})") from None
    if norm.is_identity:
        return resolved
    return [Finding(f.kind, *norm.span(f.start, f.end)) for f in resolved]


def is_soft_space(before: str, after: str) -> bool:
    """Whether one space between the characters `before` and `after` may be inside a
    finding. Any other whitespace (a newline, a tab, a second space, a space with other
    neighbours) is a hard boundary: no built-in match contains it, PEM blocks aside."""
    if not before or not after or before.isspace() or after.isspace():
        return False
    if before in "=:" or after in "=:":
        return True
    return (before.isdigit() or "A" <= before <= "Z" or before == ")") and \
        (after.isdigit() or "A" <= after <= "Z" or after in "(+")
