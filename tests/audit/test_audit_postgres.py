"""The audit trail on PostgreSQL: the database stops in the middle of a load (and the gateway
is killed while it is down), `on_store_error: closed`, the spool limit, several replicas."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.audit.test_audit_support import (
    TAMPERS,
    chain_rows,
    metrics,
    sample,
    spool_size,
    verify_api,
    verify_cli,
    wait_rows,
)
from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import REPO, GatewayProcess
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres
MSG = [{"role": "user", "content": "audit me"}]


def pg_ctl(command: str) -> None:
    if not os.environ.get("GATEWAY_TEST_PG_DATA"):
        pytest.skip("GATEWAY_TEST_PG_DATA is not set: run under scripts/test-services.sh")
    script = os.environ.get("GATEWAY_TEST_PG_CTL") or str(REPO / "scripts" / "pg-ctl.sh")
    out = subprocess.run(["bash", script, command], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from fresh_database()


@pytest.fixture
def database_down() -> Iterator[Any]:
    """`stop()` takes PostgreSQL down; it is always brought back after the test."""
    state = {"down": False}

    def stop() -> None:
        pg_ctl("stop")
        state["down"] = True

    def start() -> None:
        pg_ctl("start")
        state["down"] = False

    yield type("Db", (), {"stop": staticmethod(stop), "start": staticmethod(start)})
    if state["down"]:
        pg_ctl("start")


class Load:
    """Worker threads sending requests with unique ids until stopped (bootstrap key: no DB)."""

    def __init__(self, gw: GatewayProcess, prefix: str, workers: int = 4) -> None:
        self.gw, self.prefix = gw, prefix
        self.sent: set[str] = set()
        self.answered: set[str] = set()
        self.failed: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def wait_answered(self, n: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered) < n:
            assert time.monotonic() < deadline, f"only {len(self.answered)} answered"
            time.sleep(0.05)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.gw.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                rid = f"{self.prefix}-{worker}-{i}"
                i += 1
                self.sent.add(rid)
                try:
                    r = client.post("/v1/chat/completions", json={"model": "demo",
                                                                  "messages": MSG},
                                    headers={"authorization": f"Bearer {self.gw.admin_key}",
                                             "x-request-id": rid})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    self.answered.add(rid)
                else:
                    self.failed[rid] = r.status_code


def _exactly_once(gw: GatewayProcess, prefix: str, answered: set[str], sent: set[str]) -> None:
    rows = wait_rows(gw, "request_id LIKE :p", {"p": f"{prefix}-%"}, count=len(answered),
                     timeout_s=90)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["request_id"]] = counts.get(row["request_id"], 0) + 1
    assert all(n == 1 for n in counts.values()), "an event was stored twice"
    assert answered <= set(counts), f"{len(answered - set(counts))} answered requests lost"
    assert set(counts) <= sent


def test_database_outage_mid_load_loses_and_repeats_nothing(
        pg_url: str, tmp_path: Path, upstream: FakeUpstream, database_down: Any) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url), database_url=pg_url,
                        env=GATEWAY_ENV).start()
    try:
        with Load(gw, "outage") as load:
            load.wait_answered(60)
            database_down.stop()
            before = len(load.answered)
            load.wait_answered(before + 60)  # still answering: events go to the spool
            assert sample(metrics(gw), "gateway_audit_queue_depth") > 0
            database_down.start()
            load.wait_answered(len(load.answered) + 60)
        assert not load.failed, load.failed
        _exactly_once(gw, "outage", load.answered, load.sent)
        assert verify_api(gw)["ok"] is True
    finally:
        gw.stop()


def test_killed_while_the_database_is_down_then_restarted(
        pg_url: str, tmp_path: Path, upstream: FakeUpstream, database_down: Any) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url), database_url=pg_url,
                        env=GATEWAY_ENV).start()
    try:
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
        database_down.stop()
        with Load(gw, "killed") as load:
            load.wait_answered(80)
            gw.stop(signal.SIGKILL)  # mid-load, with everything still in the spool
        database_down.start()
        gw.start(migrate=False)
        _exactly_once(gw, "killed", load.answered, load.sent)
        sdk.chat.completions.create(model="demo", messages=MSG)
        assert verify_api(gw)["ok"] is True
    finally:
        gw.stop()


def test_closed_mode_refuses_while_the_database_is_down(
        pg_url: str, tmp_path: Path, upstream: FakeUpstream, database_down: Any) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url) +
                        "audit: {on_store_error: closed}\n", database_url=pg_url,
                        env=GATEWAY_ENV).start()
    try:
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                    extra_headers={"x-request-id": "closed-before"})
        database_down.stop()
        refused: list[str] = []
        deadline = time.monotonic() + 30
        while len(refused) < 5:
            assert time.monotonic() < deadline, "never refused while the database was down"
            rid = f"closed-{len(refused)}-{time.monotonic_ns()}"
            marker = f"marker-{rid}"
            try:
                sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": marker}],
                    extra_headers={"x-request-id": rid})
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and exc.body["code"] == "audit_unavailable"
                refused.append(rid)
                assert not [q for q in upstream.requests if marker in json.dumps(q)]
            time.sleep(0.1)
        assert sample(metrics(gw), "gateway_audit_unavailable_total") >= 5
        database_down.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                sdk.chat.completions.create(model="demo", messages=MSG,
                                            extra_headers={"x-request-id": "closed-after"})
                break
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and time.monotonic() < deadline
                time.sleep(0.2)
        wait_rows(gw, "request_id = 'closed-after'", count=1, timeout_s=30)
        stored = {r["request_id"] for r in gw.audit_rows("request_id LIKE 'closed-%'")}
        assert "closed-before" in stored and not stored & set(refused)
    finally:
        gw.stop()


def test_the_spool_limit_holds_while_the_database_is_down(
        pg_url: str, tmp_path: Path, upstream: FakeUpstream, database_down: Any) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url) +
                        "audit: {bodies: full, spool_max_mb: 1, spool_dir: spool}\n",
                        database_url=pg_url, env=GATEWAY_ENV).start()
    try:
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
        big = [{"role": "user", "content": "z " * 15000}]
        database_down.stop()
        answered: list[str] = []
        for i in range(200):
            try:
                sdk.chat.completions.create(model="demo", messages=big,
                                            extra_headers={"x-request-id": f"full-{i}"})
                answered.append(f"full-{i}")
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and exc.body["code"] == "audit_unavailable"
                break
        else:
            raise AssertionError("the spool never filled up")
        assert 5 < len(answered) < 60
        assert spool_size(tmp_path / "spool") <= 1024 * 1024
        database_down.start()
        deadline = time.monotonic() + 60
        while True:  # shipped, acknowledged, deleted: room again
            try:
                sdk.chat.completions.create(model="demo", messages=MSG,
                                            extra_headers={"x-request-id": "full-after"})
                break
            except openai.APIStatusError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        rows = wait_rows(gw, "request_id LIKE 'full-%'", count=len(answered) + 1)
        assert sorted(r["request_id"] for r in rows) == sorted([*answered, "full-after"])
    finally:
        gw.stop()


def test_replicas_keep_their_own_chains_and_verify_checks_all(
        pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    one = GatewayProcess(tmp_path / "one", standard_config(upstream.url), database_url=pg_url,
                         env=GATEWAY_ENV).start()
    two = GatewayProcess(tmp_path / "two", standard_config(upstream.url), database_url=pg_url,
                         env={**GATEWAY_ENV, "GATEWAY_REPLICA_ID": "second"}).start()
    try:
        for gw, name in ((one, "one"), (two, "two")):
            sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
            for i in range(12):
                sdk.chat.completions.create(model="demo", messages=MSG,
                                            extra_headers={"x-request-id": f"{name}-{i}"})
        wait_rows(one, "request_id LIKE 'one-%' OR request_id LIKE 'two-%'", count=24)
        replicas = {r["replica"] for r in one.audit_rows()}
        assert len(replicas) == 2 and any(r.startswith("second-") for r in replicas)
        assert verify_api(one)["events_checked"] == verify_api(two)["events_checked"] >= 24
        second = next(r for r in replicas if r.startswith("second-"))
        rows = chain_rows(pg_url, second)
        for kind, tamper in TAMPERS.items():
            bad_id, undo = tamper(pg_url, rows[:-1])
            try:
                result = verify_api(one)  # the other replica checks this one's chain too
                assert result["ok"] is False and result["first_bad_id"] == bad_id, kind
                code, cli = verify_cli(one)
                assert code == 1 and cli["first_bad_id"] == bad_id, kind
            finally:
                undo()
            assert verify_api(two)["ok"] is True, kind
    finally:
        one.stop()
        two.stop()
