"""PII scanning speed: MB/s of mixed text on one core, every built-in detector on.

Builds a deterministic mixed text (prose, chat-like messages with emails, phone numbers,
cards, IBANs, IPs, keys, code and log lines, numbers and dates that are not PII), then
times `gateway.pii.detectors.detect` and `gateway.pii.actions.scan` (detect + redact)
over it, best of several runs. Also times the hostile inputs the tests bound.

    .venv/bin/python bench/pii_scan.py            # about 10 s
    .venv/bin/python bench/pii_scan.py --mb 8 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.pii import actions, detectors

TARGET_MB_S = 20.0

_PROSE = (
    "The quarterly report is due on 2024-01-15 and covers 12 regions and 3,450 stores.",
    "Please review version 1.2.3.4.5 of the installer before Friday's 10:30 meeting.",
    "Our order ORD-2024-0042 shipped in 3 boxes weighing 12.5 kg in total.",
    "I think the model should summarise the meeting notes in five bullet points.",
    "Temperatures reached 31.5 degrees on 07/14/2023, the hottest day in 10 years.",
    "Can you rewrite this paragraph so it sounds friendlier but keeps every fact?",
    "Invoice 20231231-17 lists 4 items at 19.99 each plus 7.5% tax.",
    "The API returned HTTP 429 after 1200 requests in 60 seconds from 10.0.0 clients.",
    "Grüße aus München: das Treffen ist am 03.04.2024 um 14:00 Uhr im Raum 2.17.",
    "def add(a: int, b: int) -> int:\n    return a + b  # see issue #4521",
    "2024-05-01T12:00:03Z INFO worker-7 finished job 88123 in 0.532s (retries=0)",
    "Build 10.0.19045 fails on step 3 of 7; see the log at /var/log/build/19045.txt.",
)
_PII = (
    "Contact me at {email} or call {phone} after 5pm.",
    "My card number is {card}, expiring 09/27.",
    "Wire the refund to IBAN {iban}, reference 7781.",
    "The server at {ip} keeps timing out; ssh from {ip6} works.",
    "Here is my key {secret} please keep it safe.",
    "SSN {ssn} was entered in the form by mistake.",
)
_EMAILS = ("alice.smith@example.com", "bob+news@mail.example.co.uk", "j.doe@corp.example.org")
_PHONES = ("(555) 123-4567", "+44 20 7946 0958", "030 1234567", "555-867-5309")
_CARDS = ("4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005")
_IBANS = ("DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
          "FR14 2004 1010 0505 0001 3M02 606")
_IPS = ("192.168.1.20", "172.16.254.1", "8.8.4.4")
_IP6S = ("2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a")
_SECRETS = ("sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "AKIAIOSFODNN7EXAMPLE",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a")
_SSNS = ("123-45-6789", "078 05 1120")


_CHAT = (
    "Could you help me write a short, friendly email to my landlord about the broken heater?",
    "Summarise the following article in three sentences and keep the tone neutral.",
    "What is the difference between a list and a tuple in Python, with an example?",
    "Translate this into German: the meeting is postponed until next Tuesday afternoon.",
    "I'm planning a trip to Lisbon in May for 5 days; what should I not miss?",
    "Explain the CAP theorem like I'm a new engineer on the team.",
    "Rewrite the paragraph below so that it is easier to read for non-native speakers.",
    "Here is my draft cover letter, please make it more concise and confident.",
)


def mixed_text(size: int, seed: int = 7, pii_share: float = 0.15,
               prose: tuple[str, ...] = _PROSE) -> str:
    """About `size` characters of lines; `pii_share` of them carry one PII value."""
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < size:
        if rng.random() < pii_share:
            line = rng.choice(_PII).format(
                email=rng.choice(_EMAILS), phone=rng.choice(_PHONES), card=rng.choice(_CARDS),
                iban=rng.choice(_IBANS), ip=rng.choice(_IPS), ip6=rng.choice(_IP6S),
                secret=rng.choice(_SECRETS), ssn=rng.choice(_SSNS))
        else:
            line = rng.choice(prose)
        parts.append(line)
        total += len(line) + 1
    return "\n".join(parts)


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the mixed text in MB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="per-detector times")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    size = int(args.mb * 1024 * 1024)
    kinds = detectors.BUILTIN_KINDS
    rules = dict.fromkeys(kinds, "redact")
    print(f"python {sys.version.split()[0]}, one core, CPU time, best of {args.repeat}")
    worst = float("inf")
    for name, text in (
        ("mixed: logs, numbers, 15% of lines with PII", mixed_text(size)),
        ("chat: prose prompts, 5% of lines with PII", mixed_text(size, 8, 0.05, _CHAT)),
    ):
        mb = len(text.encode()) / 1024 / 1024
        digits = sum(map(text.count, "0123456789")) / len(text)
        found = detectors.detect(text, kinds)
        t_detect = best_of(lambda t=text: detectors.detect(t, kinds), args.repeat)
        t_scan = best_of(lambda t=text: actions.scan(t, rules), args.repeat)
        worst = min(worst, mb / t_scan)
        print(f"{name}: {mb:.1f} MB, {digits:.0%} digits, {len(found)} findings")
        print(f"  detect (all built-in kinds): {mb / t_detect:7.1f} MB/s")
        print(f"  scan (detect + redact):      {mb / t_scan:7.1f} MB/s  (target >= {TARGET_MB_S})")
    text = mixed_text(size)
    mb = len(text.encode()) / 1024 / 1024
    if args.profile:
        print("per kind, on the mixed text:")
        for kind in kinds:
            t = best_of(lambda k=kind: detectors.detect(text, (k,)), args.repeat)
            print(f"  {kind:12s} {mb / t:8.1f} MB/s  ({t / mb * 1000:5.1f} ms/MB)")
    n = 4 * 1024 * 1024
    for name, hostile in (("4 MB of '1'", "1" * n), ("4 MB of '@.'", "@." * (n // 2)),
                          ("4 MB of 'a@'", "a@" * (n // 2))):
        t = best_of(lambda h=hostile: detectors.detect(h, kinds), 1)
        print(f"hostile {name:14s} {t:6.2f} s")
    return 0 if worst >= TARGET_MB_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
