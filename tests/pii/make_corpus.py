"""Generate `corpus.jsonl`: a labelled corpus for the PII detectors' precision and recall.

Each line is `{"text": ..., "spans": [{"kind", "start", "end"}]}` (end exclusive). Labels
come from construction (where each value was put), never from the detectors. About 60%
of the samples are realistic messages carrying PII; the rest are hard negatives: dates,
times, versions, order and tracking numbers, prices, Luhn-invalid cards, invalid IBANs,
SSNs with impossible areas, words that start like keys... Deterministic (fixed seed):

    .venv/bin/python tests/pii/make_corpus.py          # rewrites tests/pii/corpus.jsonl
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
from pathlib import Path

SEED = 20240601
OUT = Path(__file__).with_name("corpus.jsonl")
POSITIVE_SAMPLES = 260
NEGATIVE_SAMPLES = 170

FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "wendy"]
LAST = ["smith", "jones", "garcia", "muller", "rossi", "dubois", "kowalski", "tanaka", "silva"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "example.co.uk",
           "uni.example.edu", "example.de", "shop.example.io"]
CITIES = ["Berlin", "Paris", "Austin", "Leeds", "Madrid", "Lyon", "Denver", "Porto"]


def luhn_complete(body: str) -> str:
    for d in "0123456789":
        total = 0
        for i, ch in enumerate(reversed(body + d)):
            n = int(ch) * (2 if i % 2 else 1)
            total += n - 9 if n > 9 else n
        if total % 10 == 0:
            return body + d
    raise AssertionError


def luhn_break(number: str, rng: random.Random) -> str:
    """The same number with a wrong check digit."""
    last = int(number[-1])
    return number[:-1] + str((last + 1 + rng.randrange(9)) % 10)


def iban_complete(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def spaced(value: str, size: int = 4) -> str:
    return " ".join(value[i:i + size] for i in range(0, len(value), size))


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def name(self) -> str:
        return f"{self.r.choice(FIRST).title()} {self.r.choice(LAST).title()}"

    def email(self) -> str:
        first, last = self.r.choice(FIRST), self.r.choice(LAST)
        local = self.r.choice([f"{first}.{last}", f"{first}{self.r.randrange(100)}",
                               f"{first[0]}{last}", f"{first}+news", f"{first}_{last}"])
        return f"{local}@{self.r.choice(DOMAINS)}"

    def phone(self) -> str:
        d = self.digits
        area = str(self.r.randint(2, 9)) + d(2)
        return self.r.choice([
            f"({area}) {d(3)}-{d(4)}", f"{area}-{d(3)}-{d(4)}", f"{area}.{d(3)}.{d(4)}",
            f"+1 {area} {d(3)} {d(4)}", f"+1 ({area}) {d(3)}-{d(4)}", f"1-800-{d(3)}-{d(4)}",
            f"+44 20 {d(4)} {d(4)}", f"020 {d(4)} {d(4)}", f"07700 {d(6)}",
            f"+44 7700 {d(6)}", f"030 {d(7)}", f"+49 30 {d(7)}", f"089 {d(8)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}", f"01 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+34 91 {d(3)} {d(2)} {d(2)}", f"+91 98{d(3)} {d(5)}", f"+4930{d(7)}",
        ])

    def card(self, valid: bool = True) -> str:
        prefix, length, groups = self.r.choice([
            ("4", 16, [4, 4, 4, 4]), ("5" + str(self.r.randint(1, 5)), 16, [4, 4, 4, 4]),
            ("2223", 16, [4, 4, 4, 4]), ("3" + self.r.choice("47"), 15, [4, 6, 5]),
            ("6011", 16, [4, 4, 4, 4]), ("3530", 16, [4, 4, 4, 4])])
        number = luhn_complete(prefix + self.digits(length - len(prefix) - 1))
        if not valid:
            number = luhn_break(number, self.r)
        style = self.r.choice(["", " ", "-"])
        if not style:
            return number
        out, pos = [], 0
        for g in groups:
            out.append(number[pos:pos + g])
            pos += g
        return style.join(out)

    def ssn(self, valid: bool = True) -> str:
        if valid:
            area = self.r.choice([n for n in range(1, 900) if n != 666])
        else:
            area = self.r.choice([0, 666, self.r.randint(900, 999)])
        sep = self.r.choice(["-", "-", " "])
        return f"{area:03d}{sep}{self.r.randint(1, 99):02d}{sep}{self.r.randint(1, 9999):04d}"

    def iban(self, valid: bool = True) -> str:
        country, n, alpha = self.r.choice([("DE", 18, False), ("FR", 23, False),
                                           ("GB", 18, True), ("NL", 14, True), ("ES", 20, False),
                                           ("IT", 23, True), ("BE", 12, False), ("CH", 17, False)])
        bank = "".join(self.r.choice(string.ascii_uppercase) for _ in range(4)) if alpha else ""
        value = iban_complete(country, bank + self.digits(n - len(bank)))
        if not valid:
            value = value[:2] + f"{(int(value[2:4]) + 1 + self.r.randrange(90)) % 100:02d}" + \
                value[4:]
        return spaced(value) if self.r.random() < 0.6 else value

    def ip(self) -> str:
        if self.r.random() < 0.7:
            return str(ipaddress.IPv4Address(self.r.choice([
                self.r.randint(0x0A000000, 0x0AFFFFFF), self.r.randint(0xC0A80000, 0xC0A8FFFF),
                self.r.randint(0x01000000, 0xDFFFFFFF)])))
        addr = ipaddress.IPv6Address((0x20010DB8 << 96) + self.r.getrandbits(64))
        return self.r.choice([addr.compressed, addr.exploded, "::1", "fe80::1ff:fe23:4567:890a"])

    def token(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def secret(self) -> str:
        t = self.token
        return self.r.choice([
            f"sk-proj-{t(48)}", f"sk-{t(48)}", f"sk-ant-api03-{t(93)}AA",
            f"AKIA{t(16, string.ascii_uppercase + '234567')}", f"ghp_{t(36)}", f"gho_{t(36)}",
            f"github_pat_11{t(20)}_{t(59)}",
            f"xoxb-{t(12, string.digits)}-{t(13, string.digits)}-{t(24)}",
            f"sk_live_{t(24)}", f"rk_live_{t(24)}", f"sk_test_{t(24)}", f"AIza{t(35)}",
            f"eyJ{t(30)}.eyJ{t(60)}.{t(43, string.ascii_letters + string.digits + '_-')}",
            f"sk-gw-{t(43, string.ascii_letters + string.digits + '_-')}",
        ])


class Sample:
    def __init__(self) -> None:
        self.text = ""
        self.spans: list[dict[str, object]] = []

    def add(self, piece: str, kind: str | None = None) -> Sample:
        if kind:
            self.spans.append({"kind": kind, "start": len(self.text),
                               "end": len(self.text) + len(piece)})
        self.text += piece
        return self


def positive(g: Gen) -> Sample:
    r, s = g.r, Sample()
    pick = r.randrange(17)
    if pick == 14:
        s.add("Reach ").add(g.email().upper() if r.random() < 0.5 else g.email(), "email")
        s.add(" or ").add(f"({r.randint(2, 9)}{g.digits(2)}) {g.digits(3)}-{g.digits(4)}", "phone")
        s.add(f" ext. {g.digits(3)}; fax ").add(f"+1-{r.randint(2, 9)}{g.digits(2)}-{g.digits(3)}-"
                                                   f"{g.digits(4)}", "phone").add(".")
    elif pick == 15:
        network = str(ipaddress.IPv4Address(r.getrandbits(32) | 0x01000000))
        s.add("allow ").add(network, "ip_address")
        s.add(f"/{r.randint(8, 32)} and connect to ").add(g.ip(), "ip_address")
        s.add(f" on port {r.randint(1024, 65535)}")
    elif pick == 16:
        key = f"sk-proj-{g.token(56, string.ascii_letters + string.digits + '_-')}"
        s.add("OPENAI_API_KEY=").add(key, "secret")
        s.add("\nSTRIPE_KEY=").add(f"sk_live_{g.token(24)}", "secret")
        s.add(f"\nDEBUG=false\nWORKERS={r.randint(1, 16)}")
    elif pick == 0:
        s.add(f"Hi, I'm {g.name()}. You can reach me at ").add(g.email(), "email")
        s.add(" or on ").add(g.phone(), "phone").add(".")
    elif pick == 1:
        s.add("Please charge my card ").add(g.card(), "credit_card")
        s.add(f" for order #{g.digits(6)}, expiry {r.randint(1, 12):02d}/{r.randint(25, 31)}.")
    elif pick == 2:
        s.add("For the form: SSN ").add(g.ssn(), "us_ssn")
        s.add(f", date of birth {r.randint(1950, 2004)}-{r.randint(1, 12):02d}-"
              f"{r.randint(1, 28):02d}.")
    elif pick == 3:
        s.add(f"Transfer EUR {r.randint(10, 9999)},{g.digits(2)} to ").add(g.iban(), "iban")
        s.add(f" (reference INV-{g.digits(5)}) by Friday.")
    elif pick == 4:
        s.add(f"{r.randint(2023, 2025)}-0{r.randint(1, 9)}-1{r.randint(0, 9)}T"
              f"{r.randint(10, 23)}:{g.digits(2)[0]}5:00Z WARN upstream ")
        s.add(g.ip(), "ip_address").add(f" returned 502 after {r.randint(100, 999)} ms")
    elif pick == 5:
        s.add("Here is our API key, please keep it safe: ").add(g.secret(), "secret")
    elif pick == 6:
        key = "AKIA" + g.token(16, string.ascii_uppercase + "234567")
        sec = g.token(40, string.ascii_letters + string.digits + "/+")
        s.add("[default]\naws_access_key_id = ").add(key, "secret")
        s.add("\naws_secret_access_key = ").add(sec, "secret")
        s.add(f"\nregion = eu-west-{r.randint(1, 3)}")
    elif pick == 7:
        body = "\n".join(g.token(64, string.ascii_letters + string.digits + "+/")
                         for _ in range(r.randint(2, 6)))
        label = r.choice(["RSA ", "EC ", "", "OPENSSH "])
        pem = f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"
        s.add("Deploy failed with this key:\n```\n").add(pem, "secret").add("\n```\nAny idea?")
    elif pick == 8:
        s.add(f"Dear support, my name is {g.name()} (").add(g.email(), "email")
        s.add(f"). My flight on {r.randint(1, 28)}.{r.randint(1, 12)}.{r.randint(2024, 2025)} "
              "was cancelled; call me at ").add(g.phone(), "phone").add(" please.")
    elif pick == 9:
        s.add(f"Server inventory: web-{r.randint(1, 9)} at ").add(g.ip(), "ip_address")
        s.add(", db at ").add(g.ip(), "ip_address")
        s.add(f", version {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}.")
    elif pick == 10:
        s.add("Customer record: ").add(g.email(), "email").add(" | ")
        s.add(g.ssn(), "us_ssn").add(" | card ").add(g.card(), "credit_card")
    elif pick == 11:
        unicode_pick = r.randrange(3)
        if unicode_pick == 0:
            e = g.email()
            at = e.index("@")
            s.add("mail me: ").add(e[:at] + "\u200b" + e[at:], "email").add(" thanks")
        elif unicode_pick == 1:
            card = luhn_complete("4" + g.digits(14))
            wide = " ".join(card[i:i + 4] for i in range(0, 16, 4)).translate(
                {ord(c): chr(ord(c) + 0xFEE0) for c in string.digits})
            s.add("カード番号は ").add(wide, "credit_card").add(" です")
        else:
            s.add("Téléphone : ").add(g.phone(), "phone").add(", courriel : ")
            s.add(g.email(), "email")
    elif pick == 12:
        s.add('{"user": {"email": "').add(g.email(), "email").add('", "ip": "')
        s.add(g.ip(), "ip_address").add(f'", "plan": "pro", "seats": {r.randint(1, 99)}}}')
    else:
        s.add("Authorization: Bearer ").add(g.secret(), "secret")
        s.add(f"\nX-Request-Id: {g.token(8).lower()}-{g.digits(4)}")
    return s


def negative(g: Gen) -> Sample:
    r, s = g.r, Sample()
    pick = r.randrange(20)
    d = g.digits
    if pick == 16:
        s.add(f"Population {r.randint(1, 9)} {d(3)} {d(3)} (2021), budget EUR {r.randint(1, 99)} "
              f"{d(3)} {d(3)},{d(2)}; see RFC {r.randint(1000, 9999)} and "
              f"ISO {r.randint(1000, 9999)}.")
    elif pick == 17:
        s.add(f"Call 1-800-FLOWERS or dial {d(3)}-{d(4)} locally; case {d(3)}-{d(4)}, "
              f"SKU {d(4)}-{d(3)}-{d(2)}.")
    elif pick == 18:
        s.add(f"ISBN 0-{d(3)}-{d(5)}-{r.randint(0, 9)}; covered {r.randint(2000, 2010)}-"
              f"{r.randint(2011, 2024)}; see pp. {r.randint(1, 99)}-{r.randint(100, 300)}.")
    elif pick == 19:
        s.add(f"Matrix [[{d(3)}, {d(3)}], [{d(3)}, {d(3)}]] and hash "
              f"{g.token(40, '0123456789abcdef')}"
              f" and base64 {g.token(24)}== in the log.")
    elif pick == 0:
        s.add(f"Released version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}."
              f"{r.randint(0, 9)}.{r.randint(1, 9)} and {r.randint(1, 20)}.0.0 of the SDK.")
    elif pick == 1:
        s.add(f"The meeting moved from {r.randint(2023, 2025)}-{r.randint(1, 12):02d}-"
              f"{r.randint(1, 28):02d} to {r.randint(1, 28):02d}.{r.randint(1, 12):02d}."
              f"{r.randint(2023, 2025)} at {r.randint(8, 17)}:"
              f"{r.choice(['00', '15', '30', '45'])}.")
    elif pick == 2:
        s.add(f"Order ORD-{r.randint(2020, 2025)}-{d(4)} shipped; tracking 1Z{d(3)}AA{d(10)}, "
              f"invoice {r.randint(2023, 2025)}{d(4)}-{d(2)}.")
    elif pick == 3:
        s.add(f"The test card {g.card(valid=False)} was declined (Luhn check failed).")
    elif pick == 4:
        s.add(f"Wrong IBAN {g.iban(valid=False)}: the check digits do not match.")
    elif pick == 5:
        s.add(f"Invalid SSN {g.ssn(valid=False)} rejected by the validator.")
    elif pick == 6:
        s.add(f"Total: ${r.randint(1, 999)},{d(3)}.{d(2)} for {r.randint(2, 40)} seats, "
              f"{r.randint(1, 99)}.{r.randint(0, 9)}% discount, "
              f"ratio {r.randint(1, 9)}:{r.randint(1, 9)}.")
    elif pick == 7:
        s.add(f"Build {r.randint(10, 19)}.0.{r.randint(10000, 22999)} fails: "
              f"see src/main.py line {r.randint(10, 999)}, "
              f"commit {g.token(12, '0123456789abcdef')}.")
    elif pick == 8:
        s.add("We use sk-learn and task-runner-for-everything, plus "
              f"ask-me-anything-{r.randint(1, 99)} sessions.")
    elif pick == 9:
        s.add(f"Coordinates {r.randint(-89, 89)}.{d(4)}, {r.randint(-179, 179)}.{d(4)}; "
              f"UUID {g.token(8, '0123456789abcdef')}-{g.token(4, '0123456789abcdef')}-"
              f"4{g.token(3, '0123456789abcdef')}-a{g.token(3, '0123456789abcdef')}-"
              f"{g.token(12, '0123456789abcdef')}.")
    elif pick == 10:
        s.add(f"Timestamps {r.randint(10, 23)}:{d(2)[0]}{d(1)}:{d(1)}0 and "
              f"{r.randint(2023, 2025)}-01-{r.randint(10, 28)}T{r.randint(10, 23)}:00:00+01:00, "
              f"MAC 00:1a:2b:{d(2)}:4d:5e, std::vector<int> v;")
    elif pick == 11:
        s.add(f"ISBN 978-{r.randint(0, 9)}-{d(2)}-{d(6)}-{r.randint(0, 9)}, "
              f"page {r.randint(1, 999)}, room {r.randint(100, 999)}, ext. {d(4)}.")
    elif pick == 12:
        s.add(f"Out-of-range address {r.randint(256, 999)}.{r.randint(0, 255)}."
              f"{r.randint(0, 255)}.{r.randint(0, 255)} and partial "
              f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.")
    elif pick == 13:
        s.add(f"Account number {d(10)} and customer id {d(8)} and PIN {d(4)}.")
    elif pick == 14:
        s.add(f"Call me maybe: {r.randint(100, 999)} apples, {d(3)}-{d(2)} scores, "
              f"{r.randint(1, 9)}-{d(3)} code, v{r.randint(1, 9)}.{r.randint(0, 9)}."
              f"{r.randint(0, 9)}.{r.randint(0, 9)} firmware.")
    else:
        s.add("-----BEGIN CERTIFICATE-----\n" + g.token(64) + "\n-----END CERTIFICATE-----\n"
              "and an email-like @handle and user@localhost.")
    return s


def build() -> list[dict[str, object]]:
    gen = Gen(random.Random(SEED))
    samples = [positive(gen) for _ in range(POSITIVE_SAMPLES)]
    samples += [negative(gen) for _ in range(NEGATIVE_SAMPLES)]
    gen.r.shuffle(samples)
    return [{"text": s.text, "spans": s.spans} for s in samples]


def main() -> None:
    with OUT.open("w", encoding="utf-8") as fh:
        for row in build():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({POSITIVE_SAMPLES + NEGATIVE_SAMPLES} samples)")


if __name__ == "__main__":
    main()
