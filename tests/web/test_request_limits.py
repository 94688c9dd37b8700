"""The limits on what a client sends hold for every byte and on every route: request heads
(at most 100 header fields and 64 KiB, else 431 and the connection is closed) and bodies
(`server.max_body_bytes`, else 413) on `/v1`, admin, audit and UI routes alike."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.web.request_head import MAX_HEAD_BYTES, MAX_HEADERS
from tests.support.gateway_proc import GatewayProcess
from tests.ui.test_ui_http import csrf_of, sign_in

MAX_BODY = 65536
CONFIG = f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
server: {{max_body_bytes: {MAX_BODY}}}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = GatewayProcess(tmp_path_factory.mktemp("request-limits"), CONFIG).start()
    g.create_key(name="limits-target")
    r = g.admin("POST", "/admin/templates", {"name": "limits-t", "model": "demo",
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 201, r.text
    yield g
    g.stop()


def raw_exchange(gw: GatewayProcess, head: bytes, filler: bytes = b"", repeat: int = 0
                 ) -> bytes:
    """Send `head` (then `filler` `repeat` times, as long as the server reads), return all
    the server answered before it closed the connection."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        try:
            s.sendall(head)
            for _ in range(repeat):
                s.sendall(filler)
        except OSError:  # the server answered and closed while we were still sending
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    return b"".join(chunks)


def peak_rss_mib(gw: GatewayProcess) -> float:
    assert gw.proc is not None
    for line in Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


HEADS = {
    "10,000 header fields": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                             + b"".join(b"x-h%d: v\r\n" % i for i in range(10_000)) + b"\r\n",
                             b"", 0),
    "1 MiB of headers": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"x-big%d: %s\r\n" % (i, b"a" * 65536) for i in range(16))
                         + b"\r\n", b"", 0),
    "one header that never ends": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-endless: ",
                                   b"a" * (1 << 20), 32),
    "a request line that never ends": (b"GET /v1/models?q=", b"a" * (1 << 20), 32),
}


@pytest.mark.parametrize("case", list(HEADS))
def test_a_head_over_its_bounds_is_refused_with_431(gw: GatewayProcess, case: str) -> None:
    before = peak_rss_mib(gw)
    head, filler, repeat = HEADS[case]
    answer = raw_exchange(gw, head, filler, repeat)
    assert status_of(answer) == 431
    headers, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    error = httpx.Response(200, content=body).json()["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert set(error) == {"message", "type", "param", "code"}
    assert str(MAX_HEADERS) in error["message"] and str(MAX_HEAD_BYTES) in error["message"]
    assert peak_rss_mib(gw) - before < 16  # up to 32 MiB were offered
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_a_head_within_its_bounds_is_served(gw: GatewayProcess) -> None:
    headers = {f"x-h{i}": "v" * 500 for i in range(MAX_HEADERS - 10)}  # 90 fields, ~46 KB
    headers["authorization"] = f"Bearer {gw.admin_key}"
    r = httpx.get(gw.base_url + "/models", headers=headers)
    assert r.status_code == 200, r.text


def test_a_431_has_no_audit_event_and_leaves_no_secret_in_the_log(gw: GatewayProcess) -> None:
    secret = "sk-live-should-not-be-logged"
    answer = raw_exchange(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          b"authorization: Bearer " + secret.encode() + b"\r\n"
                          + b"".join(b"x-h%d: v\r\n" % i for i in range(200)) + b"\r\n")
    assert status_of(answer) == 431
    assert "431" in gw.log() and secret not in gw.log()


# --- bodies: every route that reads one --------------------------------------------------

TOO_BIG = {"name": "x" * (MAX_BODY + 10)}


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/chat/completions"), ("POST", "/admin/keys"), ("PATCH", "/admin/keys/{key}"),
    ("POST", "/admin/teams"), ("POST", "/admin/templates"),
    ("POST", "/admin/templates/limits-t/versions"), ("POST", "/admin/templates/limits-t/render"),
    ("POST", "/admin/policies/dry-run"),
])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_max_body_bytes_is_413_on_every_route(
        gw: GatewayProcess, method: str, path: str, framing: str) -> None:
    if "{key}" in path:
        keys = gw.admin("GET", "/admin/keys").json()["data"]
        path = path.format(key=next(k["id"] for k in keys if k["name"] == "limits-target"))
    data = httpx.Request("POST", "/", json=TOO_BIG).content
    content: bytes | Iterator[bytes] = data
    if framing == "chunked":  # no Content-Length: counted as it arrives
        content = iter([data[i:i + 8192] for i in range(0, len(data), 8192)])
    r = httpx.request(method, gw.url + path, content=content, timeout=30,
                      headers={"authorization": f"Bearer {gw.admin_key}",
                               "content-type": "application/json"})
    assert r.status_code == 413, (path, r.status_code, r.text[:200])
    assert r.json()["error"]["code"] == "request_too_large"


def test_admin_changes_refused_with_413_are_audited(gw: GatewayProcess) -> None:
    r = httpx.post(gw.url + "/admin/teams", json=TOO_BIG,
                   headers={"authorization": f"Bearer {gw.admin_key}",
                            "x-request-id": "limits-team-413"})
    assert r.status_code == 413
    (event,) = gw.wait_for_audit("request_id = 'limits-team-413'")
    assert event["status_code"] == 413 and event["key_id"] == "bootstrap"


def test_ui_forms_over_max_body_bytes_are_413_pages_not_500(gw: GatewayProcess) -> None:
    anon = httpx.Client(base_url=gw.url, follow_redirects=False)
    form = anon.get("/ui/login")
    big = {"csrf_token": csrf_of(form.text), "key": "k" * (MAX_BODY + 10)}
    r = anon.post("/ui/login", data=big)
    assert r.status_code == 413, r.text[:300]
    assert "text/html" in r.headers["content-type"]
    (event,) = gw.wait_for_audit("endpoint = 'POST /ui/login' AND status_code = 413")
    assert event["key_id"] is None
    client, _ = sign_in(gw, gw.admin_key)
    csrf = csrf_of(client.get("/ui/keys").text)
    for path in ("/ui/keys", "/ui/templates/new", "/ui/policies/dry-run"):
        r = client.post(path, data={"csrf_token": csrf, "name": "x" * (MAX_BODY + 10)})
        assert r.status_code == 413, (path, r.status_code)
    # within the limit the same forms work
    r = client.post("/ui/keys", data={"csrf_token": csrf, "name": "x" * 100})
    assert r.status_code == 200
