"""The fuzzed gateway: a real `gateway serve` (SQLite file, demo models, the fake upstream),
its own process so the keys, teams and templates the fuzzers create touch no other test.

How long the fuzzers run: `FUZZ_SCALE` multiplies each test's examples (1 in `make test`,
a few hundred per /v1 operation; `make fuzz` uses 10), `FUZZ_SEED` fixes the seed (22 by
default, so a run is repeatable; `make fuzz FUZZ_SEED=random` explores anew) and
`FUZZ_COVERAGE=1` adds Schemathesis's coverage phase (`make fuzz` sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
SEED = os.environ.get("FUZZ_SEED", "22")

POLICIES = {
    "default.yaml": "name: default\npii:\n  input: {credit_card: redact, email: redact}\n"
                    "  output: {credit_card: redact}\n",
    "strict.yaml": "name: strict\napplies_to: {teams: [fz-strict]}\n"
                   "pii:\n  input: {email: block, credit_card: block, secret: hash}\n",
}
SEED_TEMPLATE = {
    "name": "fz-seed", "model": "demo", "params": {"temperature": 0.5},
    "variables": {"topic": {"type": "string", "max_length": 200},
                  "count": {"type": "integer", "required": False},
                  "tier": {"type": "string", "enum": ["free", "pro"], "default": "free"},
                  "items": {"type": "array", "required": False, "max_length": 5}},
    "messages": [{"role": "system", "content": "Topic: {{ topic }} ({{ tier }})"},
                 {"role": "user", "content": "{% if count %}{{ count }} items{% endif %}"}],
}


def hypothesis_settings(default_examples: int, **overrides: object) -> settings:
    """Settings for one fuzz test: a fixed seed (derandomized) unless FUZZ_SEED=random, no
    example database, no deadline (a request takes what the server takes)."""
    return settings(max_examples=max(1, round(default_examples * SCALE)), deadline=None,
                    derandomize=SEED != "random", database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck), **overrides)  # type: ignore[arg-type]


@dataclass
class FuzzTarget:
    gateway: GatewayProcess
    app_key: str
    admin_key: str
    compliance_key: str
    sent: list[str] = field(default_factory=list)  # request ids that must have one event each

    def request_id(self) -> str:
        rid = "fz-" + uuid.uuid4().hex[:16]
        self.sent.append(rid)
        return rid


@pytest.fixture(scope="session")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
                ) -> Iterator[FuzzTarget]:
    workdir: Path = tmp_path_factory.mktemp("fuzz-gw")
    (workdir / "policies").mkdir()
    for name, text in POLICIES.items():
        (workdir / "policies" / name).write_text(text)
    config = standard_config(upstream.url) + "policies_dir: policies\n"
    proc = GatewayProcess(workdir, config, env=GATEWAY_ENV).start()
    try:
        assert proc.admin("POST", "/admin/teams", {"name": "fz-strict"}).status_code == 201
        assert proc.admin("POST", "/admin/templates", SEED_TEMPLATE).status_code == 201
        target = FuzzTarget(proc, proc.create_key(name="fz-app")["key"], proc.admin_key,
                            proc.create_key(name="fz-auditor", role="compliance")["key"])
        yield target
        _assert_one_event_each(proc, target.sent)
    finally:
        proc.stop()


def _assert_one_event_each(proc: GatewayProcess, sent: list[str]) -> None:
    """Every request the fuzzers sent with an id left exactly one audit event."""
    if not sent:
        return
    wanted = set(sent)
    import time

    deadline = time.monotonic() + 15
    while True:
        rows = proc.audit_rows("request_id LIKE 'fz-%'")
        ids = [r["request_id"] for r in rows if r["request_id"] in wanted]
        if len(set(ids)) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing = wanted - set(ids)
    doubled = {i for i in ids if ids.count(i) > 1}
    assert not missing and not doubled, (f"{len(missing)} requests without an audit event "
                                         f"(e.g. {sorted(missing)[:3]}), {len(doubled)} with "
                                         "more than one")
