"""PII cost per request, in microseconds: what a typical chat request pays on the hot path.

- `input scan`: the PII stage with the shipped default policy's input rules (card, SSN, key)
  over the request's texts (`redact_request`);
- `audit bodies`: the body recorder under `audit.bodies: redacted` (the default), which
  redacts the stored request, `user` and answer for every built-in kind.

Each for a chat request without PII (the common case) and one with an email and a phone.
Best of several runs, in this process's CPU time (other jobs on the machine do not count).

    .venv/bin/python bench/pii_request.py
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.audit.bodies import BodyRecorder
from gateway.pii.actions import Redactor
from gateway.pii.policy import redact_request

SYSTEM = "You are a helpful assistant for ACME Corp. Answer briefly and politely, in English."
USER = ("Can you summarise the attached meeting notes in five bullet points? The meeting was "
        "on 2024-05-01 with 12 people from 3 teams; we agreed to ship version 2.3 by Friday.")
ANSWER = ("- Meeting on 2024-05-01, 12 attendees from 3 teams\n- Version 2.3 ships Friday\n"
          "- Owners confirmed\n- Risks reviewed\n- Next sync in two weeks")
PII = " Mail bob.smith@example.com or call 555-123-4567."
DEFAULT_INPUT = {"credit_card": "redact", "us_ssn": "redact", "secret": "redact"}


def _state(extra_text: str) -> Any:
    body = {"model": "gpt-4o-mini", "user": "user-1234", "temperature": 0.2,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": USER + extra_text}]}
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
              "model": "gpt-4o-mini",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": ANSWER + extra_text}}],
              "usage": {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100}}
    return types.SimpleNamespace(endpoint="chat", body=body, extra={"response_body": answer},
                                 event={"user": "user-1234", "model_requested": "gpt-4o-mini"})


def _best_us(make: Any, run: Any, n: int = 2000, repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        items = [make() for _ in range(n)]  # fresh states: the recorder memoises per request
        start = time.process_time()
        for item in items:
            run(item)
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


def main() -> None:
    recorder = BodyRecorder("redacted", ["gpt-4o-mini"])
    for label, extra in (("no PII", ""), ("an email and a phone", PII)):
        scan = _best_us(lambda e=extra: _state(e).body,
                        lambda body: redact_request(body, "chat", DEFAULT_INPUT, Redactor()))
        store = _best_us(lambda e=extra: _state(e), recorder)
        print(f"typical chat, {label:22s} input scan {scan:6.1f} us   "
              f"audit bodies {store:6.1f} us")


if __name__ == "__main__":
    main()
