"""The gateway on a real PostgreSQL: keys, teams, requests and their audit events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_gateway(tmp_path: Path, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    for url in fresh_database():
        proc = GatewayProcess(tmp_path, standard_config(upstream.url), database_url=url,
                              env=GATEWAY_ENV).start()
        try:
            yield proc
        finally:
            proc.stop()


def test_keys_requests_and_audit_on_postgres(pg_gateway: GatewayProcess) -> None:
    pg_gateway.create_team(name="pg-team", models=["demo", "gpt-4o-mini"])
    key = pg_gateway.create_key(name="pg-key", team="pg-team", budget_usd=1.5)
    sdk = openai.OpenAI(base_url=pg_gateway.base_url, api_key=key["key"], max_retries=0)
    r = sdk.chat.completions.create(model="gpt-4o-mini",
                                    messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"x-request-id": "pg-1"})
    assert r.choices[0].message.content == "fake: x"
    list(sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "y"}],
                                     stream=True, extra_headers={"x-request-id": "pg-2"}))
    with pytest.raises(openai.PermissionDeniedError):
        sdk.embeddings.create(model="demo-embed", input="z", extra_headers={"x-request-id": "pg-3"})
    events = pg_gateway.wait_for_audit("request_id IN ('pg-1', 'pg-2', 'pg-3')", count=3)
    by_id = {e["request_id"]: e for e in events}
    assert by_id["pg-1"]["status_code"] == 200 and by_id["pg-1"]["team"] == "pg-team"
    assert by_id["pg-2"]["stream"] is True and by_id["pg-2"]["output_tokens"] > 0
    assert by_id["pg-3"]["status_code"] == 403
    listed = pg_gateway.admin("GET", "/admin/keys").json()["data"]
    assert [k["budget_usd"] for k in listed if k["id"] == key["id"]] == [1.5]
    pg_gateway.admin("DELETE", f"/admin/keys/{key['id']}")
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
