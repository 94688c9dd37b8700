"""Stored responses: `store`, `previous_response_id`, `GET`/`DELETE`/`input_items`, ownership
(another key's response is 404 everywhere, never 403, never data), retention, PII as stored,
and chains that survive a restart and work from another replica on the same database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway_proc import GatewayProcess, run_in_thread
from tests.support.postgres import PG_URL, fresh_database
from tests.support.responses import (
    PATHS,
    ResponsesGateway,
    responses_config,
    start_responses_gateway,
)

EMAIL = "ana.lima@example.org"
PII_POLICY = """
name: pii-restore
applies_to: {keys: [rsp-pii]}
pii: {input: {email: redact}, restore: true}
"""


@pytest.fixture(scope="module")
def rg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResponsesGateway]:
    yield from start_responses_gateway(tmp_path_factory.mktemp("responses-store"),
                                       policies={"pii-restore": PII_POLICY})


@pytest.fixture
def client(rg: ResponsesGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=rg.gateway.base_url, api_key=rg.key, max_retries=0)


@pytest.fixture(scope="module")
def other_key(rg: ResponsesGateway) -> str:
    return rg.gateway.create_key(name="responses-b")["key"]


def _sql(gw: GatewayProcess, statement: str, params: dict[str, Any] | None = None
         ) -> list[dict[str, Any]]:
    from sqlalchemy import text

    from gateway.storage.engine import create_engine

    async def run() -> list[dict[str, Any]]:
        engine = create_engine(gw.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params or {})
                return [dict(r) for r in result.mappings()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return run_in_thread(run)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_get_returns_the_response_as_the_client_got_it(client: openai.OpenAI, model: str,
                                                       stream: bool) -> None:
    if stream:
        events = list(client.responses.create(model=model, input="keep me", stream=True))
        made = events[-1].response
    else:
        made = client.responses.create(model=model, input="keep me")
    got = client.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    assert got.store is True and got.output_text.endswith("keep me")


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_store_false_keeps_nothing_but_the_audit_event(rg: ResponsesGateway,
                                                       client: openai.OpenAI,
                                                       model: str) -> None:
    r = client.responses.create(model=model, input="forget me", store=False,
                                extra_headers={"x-request-id": f"rsp-nostore-{model}"})
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model, input="x", previous_response_id=r.id)
    assert _sql(rg.gateway, "SELECT id FROM responses WHERE id = :i", {"i": r.id}) == []
    rg.gateway.wait_for_audit("request_id = :r", {"r": f"rsp-nostore-{model}"})


def test_delete_answers_the_deleted_shape_then_every_route_is_404(
        rg: ResponsesGateway, client: openai.OpenAI) -> None:
    made = client.responses.create(model="chat", input="delete me")
    r = rg.request("DELETE", f"/v1/responses/{made.id}")
    assert r.status_code == 200
    assert r.json() == {"id": made.id, "object": "response.deleted", "deleted": True}
    for method, path in (("GET", f"/v1/responses/{made.id}"),
                         ("DELETE", f"/v1/responses/{made.id}"),
                         ("GET", f"/v1/responses/{made.id}/input_items")):
        assert rg.request(method, path).status_code == 404
    assert rg.post({"model": "chat", "input": "x", "previous_response_id": made.id}
                   ).status_code == 404


def test_input_items_lists_the_requests_own_items(client: openai.OpenAI) -> None:
    first = client.responses.create(model="chat", input="first turn")
    second = client.responses.create(
        model="chat", previous_response_id=first.id,
        prompt={"id": "support-bot", "variables": {"product": "P"}},
        input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"},
               {"role": "user", "content": "three"}])
    page = client.responses.input_items.list(second.id, order="asc")
    texts = [i.content[0].text for i in page.data]
    assert texts == ["one", "two", "three"]  # not the template's, not the first turn's
    assert all(i.id and i.type == "message" and i.role == "user" for i in page.data)
    newest = client.responses.input_items.list(second.id, limit=2)
    assert [i.content[0].text for i in newest.data] == ["three", "two"]
    assert newest.has_more and newest.first_id == newest.data[0].id
    assert newest.last_id == newest.data[-1].id
    rest = client.responses.input_items.list(second.id, limit=2, after=newest.last_id)
    assert [i.content[0].text for i in rest.data] == ["one"] and not rest.has_more


def test_input_items_of_a_string_input_is_one_user_message(client: openai.OpenAI) -> None:
    made = client.responses.create(model="demo", input="just text")
    (item,) = client.responses.input_items.list(made.id).data
    assert item.type == "message" and item.role == "user"
    assert item.content[0].type == "input_text" and item.content[0].text == "just text"


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_a_chain_replays_the_earlier_turns(rg: ResponsesGateway, client: openai.OpenAI,
                                           model: str) -> None:
    first = client.responses.create(model=model, input="my name is Ada")
    second = client.responses.create(model=model, input="and I code",
                                     previous_response_id=first.id)
    third = client.responses.create(model=model, input="who am I?",
                                    previous_response_id=second.id)
    assert third.previous_response_id == second.id
    if model == "native":  # the upstream holds the chain and replays it itself
        assert third.output_text == "fake: who am I? (after 2 turns)"
        sent = rg.upstream_bodies("/v1/responses")[-1]
        assert sent["previous_response_id"].startswith("resp_")
        assert sent["previous_response_id"] != second.id  # the upstream's own id
        assert sent["input"] == "who am I?"
    elif model == "chat":
        sent = rg.upstream_bodies("/v1/chat/completions")[-1]
        said = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
                for m in sent["messages"]]
        assert said == ["my name is Ada", "fake: my name is Ada", "and I code",
                        "fake: and I code", "who am I?"]


def test_a_chain_that_changes_model_replays_the_stored_items(rg: ResponsesGateway,
                                                             client: openai.OpenAI) -> None:
    first = client.responses.create(model="native", input="held upstream")
    rg.upstream.clear()
    second = client.responses.create(model="chat", input="now elsewhere",
                                     previous_response_id=first.id)
    assert second.output_text == "fake: now elsewhere"
    (sent,) = rg.upstream_bodies("/v1/chat/completions")
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    back = client.responses.create(model="native-2", input="and back",
                                   previous_response_id=second.id)
    sent_native = rg.upstream_bodies("/v1/responses")[-1]
    assert "previous_response_id" not in sent_native
    assert len(sent_native["input"]) == 5 and back.status == "completed"


def test_an_unknown_previous_response_id_is_404_naming_the_parameter(
        rg: ResponsesGateway) -> None:
    rg.upstream.clear()
    r = rg.post({"model": "chat", "input": "x", "previous_response_id": "resp_nope"})
    assert r.status_code == 404
    assert r.json()["error"] == {"message": "no response with id 'resp_nope' was found",
                                 "type": "invalid_request_error",
                                 "param": "previous_response_id", "code": "not_found"}
    assert rg.upstream.requests == []


ROUTES = [("GET", "/v1/responses/{id}"), ("DELETE", "/v1/responses/{id}"),
          ("GET", "/v1/responses/{id}/input_items")]


@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_another_keys_response_is_404_like_an_unknown_one(
        rg: ResponsesGateway, client: openai.OpenAI, other_key: str, model: str,
        method: str, route: str) -> None:
    mine = client.responses.create(model=model, input="private")
    theirs = rg.request(method, route.format(id=mine.id), key=other_key)
    unknown = rg.request(method, route.format(id="resp_" + "0" * 48), key=other_key)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert "private" not in theirs.text
    assert client.responses.retrieve(mine.id).output_text.endswith("private")  # still there


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_another_key_cannot_chain_on_a_response(rg: ResponsesGateway, client: openai.OpenAI,
                                                other_key: str, model: str) -> None:
    mine = client.responses.create(model=model, input="secret plan")
    rg.upstream.clear()
    r = rg.post({"model": model, "input": "what did I say?", "previous_response_id": mine.id},
                key=other_key)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert rg.upstream.requests == []


def test_an_expired_response_is_gone_and_purged_by_the_audit_purge(
        rg: ResponsesGateway, client: openai.OpenAI) -> None:
    made = client.responses.create(model="chat", input="old news")
    _sql(rg.gateway, "UPDATE responses SET expires_at = '2000-01-01 00:00:00' WHERE id = :i",
         {"i": made.id})
    assert rg.request("GET", f"/v1/responses/{made.id}").status_code == 404
    assert rg.post({"model": "chat", "input": "x", "previous_response_id": made.id}
                   ).status_code == 404
    dry = rg.gateway.cli("audit", "purge", "--dry-run")
    assert '"responses_expired":1' in dry.stdout.replace(" ", "")
    done = rg.gateway.cli("audit", "purge")
    assert '"responses_deleted":1' in done.stdout.replace(" ", "")
    assert _sql(rg.gateway, "SELECT id FROM responses WHERE id = :i", {"i": made.id}) == []


def test_a_stored_response_expires_after_the_configured_retention(
        rg: ResponsesGateway, client: openai.OpenAI) -> None:
    made = client.responses.create(model="chat", input="retention")
    (row,) = _sql(rg.gateway, "SELECT created_at, expires_at FROM responses WHERE id = :i",
                  {"i": made.id})
    kept = _as_datetime(row["expires_at"]) - _as_datetime(row["created_at"])
    assert kept.days == 7  # responses.retention_days in the test config


def _as_datetime(value: Any) -> Any:
    from datetime import datetime

    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@pytest.mark.parametrize(("route", "endpoint"), [
    ("{id}", "GET /v1/responses/{response_id}"),
    ("{id}/input_items", "GET /v1/responses/{response_id}/input_items")],
    ids=["get", "input_items"])
def test_reads_are_audited_once_each_with_the_route_and_the_id(
        rg: ResponsesGateway, client: openai.OpenAI, other_key: str, route: str,
        endpoint: str) -> None:
    made = client.responses.create(model="chat", input="audited read")
    path = "/v1/responses/" + route.format(id=made.id)
    for who, key, status in (("mine", rg.key, 200), ("theirs", other_key, 404)):
        rid = f"rsp-read-{who}-{made.id[-10:]}-{len(route)}"
        r = httpx.get(rg.gateway.url + path, timeout=10,
                      headers={"authorization": f"Bearer {key}", "x-request-id": rid})
        assert r.status_code == status
        (event,) = rg.gateway.wait_for_audit("request_id = :r", {"r": rid})
        assert event["endpoint"] == endpoint and event["status_code"] == status
        assert event["key_id"] is not None
        rows = _sql(rg.gateway, "SELECT request_body FROM audit_bodies WHERE event_id = :e",
                    {"e": event["id"]})
        assert rows and made.id in str(rows[0]["request_body"])
    assert event["error_code"] == "not_found" and event["key_name"] == "responses-b"


def test_a_delete_is_audited_with_its_status(rg: ResponsesGateway,
                                             client: openai.OpenAI) -> None:
    made = client.responses.create(model="chat", input="to delete")
    httpx.delete(rg.gateway.url + f"/v1/responses/{made.id}", timeout=10,
                 headers={"authorization": f"Bearer {rg.key}", "x-request-id": "rsp-del-1"})
    (event,) = rg.gateway.wait_for_audit("request_id = 'rsp-del-1'")
    assert event["endpoint"] == "DELETE /v1/responses/{response_id}"
    assert event["status_code"] == 200 and event["key_name"] == "responses-a"


def test_responses_are_stored_redacted_and_restored_for_the_caller_only(
        rg: ResponsesGateway) -> None:
    key = rg.gateway.create_key(name="rsp-pii")["key"]
    client = openai.OpenAI(base_url=rg.gateway.base_url, api_key=key, max_retries=0)
    rg.upstream.clear()
    made = client.responses.create(model="chat", input=f"mail {EMAIL}")
    assert made.output_text == f"fake: mail {EMAIL}"  # restored for the caller
    (sent,) = rg.upstream_bodies("/v1/chat/completions")
    assert EMAIL not in repr(sent) and "[EMAIL_1]" in repr(sent)
    (row,) = _sql(rg.gateway, "SELECT input_items, response FROM responses WHERE id = :i",
                  {"i": made.id})
    assert EMAIL not in repr(row) and "[EMAIL_1]" in row["response"]
    assert client.responses.retrieve(made.id).output_text == "fake: mail [EMAIL_1]"
    rg.upstream.clear()
    client.responses.create(model="chat", input="again", previous_response_id=made.id)
    (replayed,) = rg.upstream_bodies("/v1/chat/completions")
    assert EMAIL not in repr(replayed) and "[EMAIL_1]" in repr(replayed)


def test_a_stream_is_stored_before_its_terminal_event_reaches_the_client(
        rg: ResponsesGateway, client: openai.OpenAI) -> None:
    for event in client.responses.create(model="chat", input="fast follow-up", stream=True):
        if event.type == "response.completed":
            # chained at once, before the stream has even ended for the client
            r = rg.post({"model": "chat", "input": "next",
                         "previous_response_id": event.response.id})
            assert r.status_code == 200, r.text


# --- restart and replicas ----------------------------------------------------------------------

def _replica(rg: ResponsesGateway, workdir: Any) -> GatewayProcess:
    return GatewayProcess(workdir, responses_config(rg.upstream.url, rg.faulty.url),
                          database_url=rg.gateway.database_url).start(migrate=False)


def test_a_chain_works_after_a_restart_and_from_another_replica(
        rg: ResponsesGateway, client: openai.OpenAI, other_key: str,
        tmp_path: Any) -> None:
    made = client.responses.create(model="chat", input="before restart")
    rg.gateway.stop()
    rg.gateway.start(migrate=False)
    again = openai.OpenAI(base_url=rg.gateway.base_url, api_key=rg.key, max_retries=0)
    assert again.responses.retrieve(made.id).output_text == "fake: before restart"
    replica = _replica(rg, tmp_path)
    try:
        there = openai.OpenAI(base_url=replica.base_url, api_key=rg.key, max_retries=0)
        follow = there.responses.create(model="chat", input="on replica two",
                                        previous_response_id=made.id)
        assert there.responses.retrieve(made.id).output_text == "fake: before restart"
        assert again.responses.retrieve(follow.id).previous_response_id == made.id
        stranger = openai.OpenAI(base_url=replica.base_url, api_key=other_key, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(made.id)
    finally:
        replica.stop()


@pytest.fixture(scope="module")
def pg_rg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResponsesGateway]:
    if not PG_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set: run with scripts/test-services.sh")
    for url in fresh_database():
        yield from start_responses_gateway(tmp_path_factory.mktemp("responses-pg"),
                                           database_url=url)


def test_on_postgresql_two_replicas_share_chains_and_ownership(
        pg_rg: ResponsesGateway, tmp_path: Any) -> None:
    a = openai.OpenAI(base_url=pg_rg.gateway.base_url, api_key=pg_rg.key, max_retries=0)
    made = a.responses.create(model="native", input="on postgres")
    replica = _replica(pg_rg, tmp_path)
    try:
        there = openai.OpenAI(base_url=replica.base_url, api_key=pg_rg.key, max_retries=0)
        follow = there.responses.create(model="native", input="from replica two",
                                        previous_response_id=made.id)
        assert follow.output_text == "fake: from replica two (after 1 turns)"
        other = pg_rg.gateway.create_key(name="pg-b")["key"]
        r = pg_rg.request("GET", f"/v1/responses/{made.id}", key=other)
        assert r.status_code == 404
        assert [i.content[0].text for i in there.responses.input_items.list(made.id).data] \
            == ["on postgres"]
    finally:
        replica.stop()
