"""`prompts/` files: synced into SQL at start-up and by `gateway templates sync` (a changed file
is a new version, an unchanged one a no-op, nothing overwritten), bad files stop `check-config`
and start-up with `FILE: key: reason`, and a second replica picks up changes by itself."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway_proc import GatewayProcess
from tests.templates.test_templates_unit import SHIPPED_EXAMPLES

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
prompts_dir: prompts
"""
GREET = """name: greet
description: say hello
model: demo
variables:
  who: {type: string, default: world}
messages:
  - role: user
    content: "Hello {{ who }}, version A."
"""


def versions(gw: GatewayProcess, name: str) -> list[dict[str, Any]]:
    r = gw.admin("GET", f"/admin/templates/{name}/versions")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def eventually(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def workdir_with_prompts(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    (tmp_path / "prompts" / "greet.yaml").write_text(GREET)
    return tmp_path


@pytest.fixture
def gw(workdir_with_prompts: Path) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(workdir_with_prompts, CONFIG).start()
    yield proc
    proc.stop()


def test_start_up_loads_prompt_files(gw: GatewayProcess) -> None:
    listed = {t["name"]: t for t in gw.admin("GET", "/admin/templates").json()["data"]}
    assert {"support-triage", "summarize", "extract-fields", "greet"} <= set(listed)
    assert listed["greet"] == {"name": "greet", "description": "say hello",
                               "latest_version": 1, "labels": {}}
    got = gw.admin("GET", "/admin/templates/support-triage").json()
    assert (got["version"], got["source"], got["author_key_id"]) == (1, "file", None)
    sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
    reply = sdk.chat.completions.create(
        model=None, messages=[],  # type: ignore[arg-type]
        extra_body={"template": {"name": "support-triage",
                                 "variables": {"ticket": "Where is my refund?"}}})
    assert reply.model == "demo" and "Where is my refund?" in reply.choices[0].message.content
    # every shipped prompt renders through the admin preview with its example variables
    for name, (variables, phrases) in SHIPPED_EXAMPLES.items():
        r = gw.admin("POST", f"/admin/templates/{name}/render", {"variables": variables})
        assert r.status_code == 200, r.text
        text = "\n".join(m["content"] for m in r.json()["messages"])
        assert all(p.lower() in text.lower() for p in phrases), name


def test_restart_and_sync_create_versions_only_for_changed_files(gw: GatewayProcess) -> None:
    prompts = gw.workdir / "prompts"
    first = versions(gw, "greet")
    assert [v["version"] for v in first] == [1]
    # Unchanged files: a restart and a sync are no-ops.
    gw.stop()
    gw.start(migrate=False)
    assert versions(gw, "greet") == first
    out = gw.cli("templates", "sync")
    assert "greet: unchanged, version 1" in out.stdout
    assert "0 new version(s)" in out.stdout
    # Layout and comments alone do not make a version either.
    (prompts / "greet.yaml").write_text("# a comment\n" + GREET.replace("say hello",
                                                                        "'say hello'"))
    assert "greet: unchanged, version 1" in gw.cli("templates", "sync").stdout

    # A changed file: a new version; the running gateway sees it without a restart.
    (prompts / "greet.yaml").write_text(GREET.replace("version A", "version B"))
    out = gw.cli("templates", "sync")
    assert "greet: new version 2" in out.stdout and "1 new version(s)" in out.stdout

    def preview() -> str:
        r = gw.admin("POST", "/admin/templates/greet/render", {"variables": {"who": "Ann"}})
        return r.json()["messages"][0]["content"]

    eventually(lambda: preview() == "Hello Ann, version B.")
    old = gw.admin("GET", "/admin/templates/greet?version=1").json()
    assert old["messages"][0]["content"] == "Hello {{ who }}, version A."

    # An edit through the API is kept: an unchanged file does not shadow it on restart.
    edited = {"name": "greet", "model": "demo",
              "messages": [{"role": "user", "content": "edited in the API"}]}
    assert gw.admin("POST", "/admin/templates/greet/versions", edited).status_code == 201
    gw.stop()
    gw.start(migrate=False)
    assert [v["version"] for v in versions(gw, "greet")] == [3, 2, 1]
    assert [v["source"] for v in versions(gw, "greet")] == ["api", "file", "file"]
    # Changing the file again makes version 4, at start-up.
    gw.stop()
    (prompts / "greet.yaml").write_text(GREET.replace("version A", "version C"))
    gw.start(migrate=False)
    assert [v["version"] for v in versions(gw, "greet")] == [4, 3, 2, 1]
    assert preview() == "Hello Ann, version C."


BAD_FILES = {
    "broken.yaml": ("messages: [\n", "prompts/broken.yaml: line 2: not valid YAML"),
    "typo.yaml": ("messages: [{role: user, content: 'Hi {{ who }'}]\n"
                  "variables: {who: {}}\n",
                  "prompts/typo.yaml: messages[0].content: does not compile: line 1:"),
    "evil.yaml": ("messages: [{role: user, content: '{{ cycler.__init__.__globals__ }}'}]\n",
                  "prompts/evil.yaml: messages[0].content: line 1: access to the attribute "
                  "'__globals__' is not allowed"),
    "shape.yaml": ("messages: [{role: user, content: x}]\nvariables: {v: {type: uuid}}\n",
                   "prompts/shape.yaml: variables.v.type: "),
}


@pytest.mark.parametrize("file", sorted(BAD_FILES))
def test_bad_prompt_file_fails_check_config_and_start_up(tmp_path: Path, file: str) -> None:
    text, expected = BAD_FILES[file]
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "fine.yaml").write_text(GREET.replace("name: greet", "name: fine"))
    (tmp_path / "prompts" / file).write_text(text)
    proc = GatewayProcess(tmp_path, CONFIG)
    out = proc.cli("check-config", check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert "Traceback" not in out.stderr
    sync = proc.cli("templates", "sync", check=False)
    assert sync.returncode == 1 and sync.stderr.strip().startswith(expected)
    with pytest.raises(RuntimeError) as err:
        proc.start(timeout_s=30)
    assert expected in str(err.value)
    proc.stop()


def test_second_replica_sees_changes_without_a_restart(tmp_path: Path,
                                                       workdir_with_prompts: Path) -> None:
    db = f"sqlite:///{tmp_path}/shared.db"
    a = GatewayProcess(workdir_with_prompts / "a", CONFIG, database_url=db)
    shutil.copytree(workdir_with_prompts / "prompts", a.workdir / "prompts")
    b = GatewayProcess(tmp_path / "b", CONFIG, database_url=db)  # no prompts folder
    a.start()
    b.start(migrate=False)
    try:
        sdk = openai.OpenAI(base_url=b.base_url, api_key=b.admin_key, max_retries=0)

        def answer(**template: Any) -> str:
            try:
                out = sdk.chat.completions.create(
                    model=None, messages=[],  # type: ignore[arg-type]
                    extra_body={"template": {"name": "shared", **template}})
            except openai.BadRequestError as exc:
                return exc.body["code"]
            return out.choices[0].message.content.rsplit(": ", 1)[-1]

        assert answer() == "template_not_found"
        body = {"name": "shared", "model": "demo",
                "messages": [{"role": "user", "content": "one"}]}
        assert a.admin("POST", "/admin/templates", body).status_code == 201
        eventually(lambda: answer() == "one")
        body["messages"][0]["content"] = "two"
        a.admin("POST", "/admin/templates/shared/versions", body)
        a.admin("PUT", "/admin/templates/shared/labels/production", {"version": 2})
        eventually(lambda: answer(label="production") == "two")
        a.admin("PUT", "/admin/templates/shared/labels/production", {"version": 1})
        eventually(lambda: answer(label="production") == "one")
        # Replica b's admin API shows what a made at once (admin reads check the change log).
        assert b.admin("GET", "/admin/templates/greet").json()["version"] == 1
    finally:
        a.stop()
        b.stop()
