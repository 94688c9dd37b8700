"""Templates on a real PostgreSQL shared by two replicas: concurrent edits get distinct,
gap-free version numbers; both replicas start from the same prompts/ without duplicates."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.gateway_proc import GatewayProcess
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[2]
CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
"""


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    for url in fresh_database():
        procs = []
        for name in ("a", "b"):
            proc = GatewayProcess(tmp_path / name, CONFIG, database_url=url)
            shutil.copytree(REPO / "prompts", proc.workdir / "prompts")
            procs.append(proc)
        procs[0].migrate()
        starters = [threading.Thread(target=p.start, kwargs={"migrate": False})
                    for p in procs]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        try:
            yield procs[0], procs[1]
        finally:
            for p in procs:
                p.stop()


def test_two_replicas_share_templates_on_postgres(
        replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = replicas
    for proc in (a, b):
        listed = {t["name"]: t["latest_version"]
                  for t in proc.admin("GET", "/admin/templates").json()["data"]}
        assert listed == {"support-triage": 1, "summarize": 1, "extract-fields": 1}

    body = {"name": "race", "model": "demo", "messages": [{"role": "user", "content": "v"}]}
    assert a.admin("POST", "/admin/templates", body).status_code == 201
    results: list[int] = []

    def add(proc: GatewayProcess, i: int) -> None:
        r = proc.admin("POST", "/admin/templates/race/versions",
                       {**body, "messages": [{"role": "user", "content": f"edit {i}"}]})
        assert r.status_code == 201, r.text
        results.append(r.json()["version"])

    # Enough concurrent writers on two replicas that optimistic retries alone would run out.
    threads = [threading.Thread(target=add, args=(a if i % 2 else b, i)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(2, 42))
    versions = a.admin("GET", "/admin/templates/race/versions").json()["data"]
    assert [v["version"] for v in versions] == list(range(41, 0, -1))

    a.admin("PUT", "/admin/templates/race/labels/production", {"version": 5})
    expected = a.admin("GET", "/admin/templates/race?version=5").json()["messages"][0]["content"]
    sdk = openai.OpenAI(base_url=b.base_url, api_key=b.admin_key, max_retries=0)
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        try:
            out = sdk.chat.completions.create(
                model=None, messages=[],  # type: ignore[arg-type]
                extra_body={"template": {"name": "race", "label": "production"}})
        except openai.BadRequestError as exc:  # b has not seen the label yet
            assert exc.body["code"] == "template_label_not_found"
        else:
            text = out.choices[0].message.content
            if text.endswith(expected):
                break
        time.sleep(0.2)
    assert text.endswith(expected), text
