"""Policy files: strict parsing, key -> team -> default resolution, model rules, reload."""

from __future__ import annotations

import subprocess
from pathlib import Path

import openai
import pytest

from gateway.config import ConfigError
from gateway.context import Principal, TeamRecord
from gateway.policies.store import PolicySet
from tests.support.gateway_proc import GATEWAY_BIN, GatewayProcess


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def _principal(key: str, team: str | None = None, team_policy: str | None = None) -> Principal:
    record = TeamRecord("t", team, None, None, None, None, None, "month", team_policy) \
        if team else None
    return Principal(key_id="key_x", key_name=key, role="app", team=team, team_record=record)


def test_resolution_is_key_then_team_then_default(tmp_path: Path) -> None:
    _write(tmp_path, "default.yaml", "name: default\nlimits: {rpm: 100}\naudit: {bodies: none}\n")
    _write(tmp_path, "team.yaml", "name: team-a\napplies_to: {teams: [a]}\nlimits: {rpm: 50}\n")
    _write(tmp_path, "key.yaml", "name: vip\napplies_to: {keys: [k1]}\n"
                                 "pii: {input: {email: redact}}\n")
    _write(tmp_path, "named.yaml", "name: strict\nmodels: {deny: [demo]}\n")
    policies = PolicySet.load(tmp_path)
    k1 = policies.effective(_principal("k1", "a"))
    assert k1.pii.input == {"email": "redact"} and k1.limits.rpm == 50
    assert k1.audit.bodies == "none" and k1.sources == ("vip", "team-a", "default")
    plain = policies.effective(_principal("other"))
    assert plain.limits.rpm == 100 and plain.pii is None and plain.sources == ("default",)
    named = policies.effective(_principal("other", "b", team_policy="strict"))
    assert not named.models.permits("demo") and named.models.permits("x")


@pytest.mark.parametrize("text,expected", [
    ("name: p\npii: {input: {emial: redact}}\n", "pii.input.emial: unknown kind"),
    ("name: p\npii: {output: {email: shred}}\n", "pii.output.email: unknown action"),
    ("name: p\nlimits: {rpm: -1}\n", "limits.rpm: "),
    ("name: p\nwhatever: 1\n", "whatever: unknown key"),
    ("applies_to: {}\n", "name: "),
])
def test_bad_policy_files_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        PolicySet.load(tmp_path, "policies")
    assert any(line.startswith("policies/bad.yaml: ") and expected in line
               for line in info.value.lines), info.value.lines


def test_check_config_fails_on_a_bad_policy(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "models: [{name: demo, deployments: [{model: demo/d}]}]\n")
    _write(tmp_path / "policies", "x.yaml", "name: x\npii: {input: {emial: redact}}\n")
    out = subprocess.run([str(GATEWAY_BIN), "check-config"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "GATEWAY_CONFIG": "gateway.yaml"})
    assert out.returncode == 1
    assert "policies/x.yaml: pii.input.emial: unknown kind" in out.stderr


def test_policy_denies_model_and_effective_endpoint(tmp_path: Path) -> None:
    _write(tmp_path / "policies", "default.yaml", "name: default\nmodels: {deny: [demo-embed]}\n")
    _write(tmp_path / "policies", "vip.yaml",
           "name: vip\napplies_to: {keys: [vip-key]}\nmodels: {allow: [demo, demo-embed]}\n")
    config = ("models:\n  - {name: demo, deployments: [{model: demo/d}]}\n"
              "  - {name: demo-embed, deployments: [{model: demo/e}]}\n")
    gw = GatewayProcess(tmp_path, config).start()
    try:
        plain = gw.create_key(name="plain")
        vip = gw.create_key(name="vip-key")
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=plain["key"], max_retries=0)
        with pytest.raises(openai.PermissionDeniedError):
            sdk.embeddings.create(model="demo-embed", input="x")
        vsdk = openai.OpenAI(base_url=gw.base_url, api_key=vip["key"], max_retries=0)
        assert vsdk.embeddings.create(model="demo-embed", input="x").data
        eff = gw.admin("GET", f"/admin/policies/effective?key_id={vip['id']}").json()
        assert eff["sources"] == ["vip"] and eff["models"]["allow"] == ["demo", "demo-embed"]
        assert gw.admin("GET", "/admin/policies/effective?key_id=nope").status_code == 404
        assert gw.admin("GET", "/admin/policies/effective").status_code == 400
        # A bad file refuses the reload and the old set stays.
        _write(tmp_path / "policies", "broken.yaml", "name: broken\nlimits: {rpm: zero}\n")
        r = gw.admin("POST", "/admin/policies/reload")
        assert r.status_code == 400 and "broken.yaml" in r.json()["error"]["message"]
        with pytest.raises(openai.PermissionDeniedError):
            sdk.embeddings.create(model="demo-embed", input="x")
        (tmp_path / "policies" / "broken.yaml").unlink()
        (tmp_path / "policies" / "default.yaml").write_text("name: default\n")
        r = gw.admin("POST", "/admin/policies/reload")
        assert r.status_code == 200 and sorted(r.json()["policies"]) == ["default", "vip"]
        assert sdk.embeddings.create(model="demo-embed", input="x").data
    finally:
        gw.stop()
