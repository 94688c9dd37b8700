"""CORS (`cors:` in gateway.yaml) through a real gateway: preflights allowed and refused, CORS
headers on every answer to an allowed origin (errors too), none without the config (`OPTIONS`
is 405 there), config problems as `FILE: cors.key: reason` lines, and a page on another
origin calling the gateway with `fetch` in Chromium."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, load_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess, free_port

APP = "https://app.example.com"
DEV = "http://localhost:5173"
PATH = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
EXPOSED = {"x-request-id", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
           "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
           "x-ratelimit-remaining-tokens", "retry-after", "x-gateway-cache"}


def _config(upstream_url: str, origins: list[str]) -> str:
    return f"""
models:
  - name: gpt-4o-mini
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream_url}/v1"}}]
cors:
  allow_origins: {origins}
  allow_methods: [GET, POST]
  allow_headers: [Authorization, Content-Type]
  max_age_s: 300
"""


@pytest.fixture(scope="module")
def page_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def cors_gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream,
            page_port: int) -> Iterator[GatewayProcess]:
    origins = [APP, DEV, f"http://localhost:{page_port}"]
    gw = GatewayProcess(tmp_path_factory.mktemp("cors"), _config(upstream.url, origins)).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def key(cors_gw: GatewayProcess) -> str:
    return cors_gw.create_key(name="browser-app", rpm=1000)["key"]


def _preflight(gw: GatewayProcess, origin: str, method: str = "POST",
               headers: str = "authorization, content-type", path: str = PATH,
               request_id: str | None = None) -> httpx.Response:
    sent = {"origin": origin, "access-control-request-method": method,
            "access-control-request-headers": headers}
    if request_id:
        sent["x-request-id"] = request_id
    return httpx.options(gw.url + path, headers=sent)


def _cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


def test_an_allowed_preflight_is_answered_204_with_what_may_be_sent(
        cors_gw: GatewayProcess) -> None:
    r = _preflight(cors_gw, APP, headers="Authorization,Content-Type", request_id="pre-ok-1")
    assert r.status_code == 204
    assert _cors_headers(r) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "300",
    }  # and never access-control-allow-credentials
    assert "origin" in r.headers["vary"].lower()
    assert r.headers["x-request-id"] == "pre-ok-1"
    assert r.content == b""
    [event] = cors_gw.wait_for_audit("request_id = 'pre-ok-1'")
    assert (event["endpoint"], event["status_code"], event["key_id"]) == (PATH, 204, None)


REFUSED = {
    "an origin not listed": (dict(origin="https://evil.example.com"), "origin"),
    "the null origin": (dict(origin="null"), "origin"),
    "a listed host on another port": (dict(origin="https://app.example.com:8443"), "origin"),
    "a listed host over http": (dict(origin="http://app.example.com"), "origin"),
    "a method not listed": (dict(origin=APP, method="DELETE"), "method"),
    "a header not listed": (dict(origin=APP, headers="authorization, x-custom"), "header"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_preflight_is_403_without_cors_headers(cors_gw: GatewayProcess,
                                                         case: tuple[dict, str]) -> None:
    args, what = case
    r = _preflight(cors_gw, **args)
    assert r.status_code == 403
    assert _cors_headers(r) == {}
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "cors_not_allowed" and error["type"] == "permission_error"
    assert f"the {what} " in error["message"]


def test_a_refused_preflight_is_audited(cors_gw: GatewayProcess) -> None:
    _preflight(cors_gw, "https://evil.example.com", request_id="pre-refused-1")
    [event] = cors_gw.wait_for_audit("request_id = 'pre-refused-1'")
    assert (event["status_code"], event["error_code"]) == (403, "cors_not_allowed")


def _assert_cors(r: httpx.Response, origin: str) -> None:
    assert r.headers["access-control-allow-origin"] == origin
    exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    assert exposed >= EXPOSED
    assert "access-control-allow-credentials" not in r.headers
    assert "origin" in r.headers["vary"].lower()


def test_an_answer_to_an_allowed_origin_carries_cors_headers(cors_gw: GatewayProcess,
                                                              key: str) -> None:
    r = httpx.post(cors_gw.url + PATH, json=BODY,
                   headers={"origin": DEV, "authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "fake: hi"
    _assert_cors(r, DEV)
    assert "x-ratelimit-remaining-requests" in r.headers


ERRORS = {
    "401 bad key": ("POST", PATH, {"authorization": "Bearer sk-nope"}, BODY, 401),
    "400 bad JSON": ("POST", PATH, None, b"{not json", 400),
    "404 unknown model": ("POST", PATH, None, {**BODY, "model": "nope"}, 404),
    "404 unknown path": ("GET", "/v1/nothing-here", None, None, 404),
    "405 wrong method": ("GET", PATH, None, None, 405),
    "200 models list": ("GET", "/v1/models", None, None, 200),
}


@pytest.mark.parametrize("case", ERRORS.values(), ids=ERRORS.keys())
def test_errors_to_an_allowed_origin_carry_cors_headers(cors_gw: GatewayProcess, key: str,
                                                        case: tuple) -> None:
    method, path, headers, body, status = case
    sent = {"origin": APP, "authorization": f"Bearer {key}", **(headers or {})}
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.request(method, cors_gw.url + path, headers=sent, **kwargs)
    assert r.status_code == status, r.text
    _assert_cors(r, APP)
    if status >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_429_exposes_retry_after_to_the_page(cors_gw: GatewayProcess) -> None:
    limited = cors_gw.create_key(name="browser-limited", rpm=1)["key"]
    sent = {"origin": APP, "authorization": f"Bearer {limited}"}
    statuses = [httpx.post(cors_gw.url + PATH, json=BODY, headers=sent) for _ in range(2)]
    assert [r.status_code for r in statuses] == [200, 429]
    _assert_cors(statuses[1], APP)
    assert int(statuses[1].headers["retry-after"]) >= 1


def test_a_request_from_another_origin_is_answered_without_cors_headers(
        cors_gw: GatewayProcess, key: str) -> None:
    r = httpx.post(cors_gw.url + PATH, json=BODY,
                   headers={"origin": "https://evil.example.com", "authorization": f"Bearer {key}"})
    assert r.status_code == 200  # the browser, not the gateway, keeps it from the page
    assert _cors_headers(r) == {}
    assert "origin" in r.headers["vary"].lower()


def test_without_cors_config_options_is_405_and_no_cors_header(gateway: GatewayProcess,
                                                              app_key: str) -> None:
    r = _preflight(gateway, APP)
    assert r.status_code == 405
    assert _cors_headers(r) == {}
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.post(gateway.url + PATH, json={**BODY, "model": "demo"},
                   headers={"origin": APP, "authorization": f"Bearer {app_key}"})
    assert r.status_code == 200
    assert _cors_headers(r) == {}


# --- the config ---------------------------------------------------------------------------
BAD_CONFIG = {
    "a path": ("allow_origins: ['https://app.example.com/']",
               "cors.allow_origins[0]: an origin has no path, query or fragment: "
               "write 'https://app.example.com'"),
    "the null origin": ("allow_origins: ['https://a.example', 'null']",
                        "cors.allow_origins[1]: the 'null' origin"),
    "a wildcard host": ("allow_origins: ['https://*.example.com']",
                        "cors.allow_origins[0]: wildcards are not supported"),
    "not http": ("allow_origins: ['ftp://example.com']",
                 "cors.allow_origins[0]: must be an origin"),
    "a default port": ("allow_origins: ['https://example.com:443']",
                       "cors.allow_origins[0]: browsers do not send the default port: "
                       "write 'https://example.com'"),
    "star and more": ("allow_origins: ['*', 'https://a.example']",
                      "cors.allow_origins: '*' already allows everything: list it alone"),
    "no origin": ("allow_origins: []", "cors.allow_origins: "),
    "a made-up method": ("{allow_origins: ['*'], allow_methods: [GET, FETCH]}",
                         "cors.allow_methods[1]: must be one of GET, HEAD, POST"),
    "a bad header name": ("{allow_origins: ['*'], allow_headers: ['x y']}",
                          "cors.allow_headers[0]: must be a header name"),
    "credentials": ("{allow_origins: ['*'], allow_credentials: true}",
                    "cors.allow_credentials: unknown key"),
    "a negative max age": ("{allow_origins: ['*'], max_age_s: -1}", "cors.max_age_s: "),
}


@pytest.mark.parametrize("case", BAD_CONFIG.values(), ids=BAD_CONFIG.keys())
def test_a_bad_cors_config_is_one_line_per_problem(tmp_path: Path, case: tuple[str, str]
                                                   ) -> None:
    text, expected = case
    path = tmp_path / "g.yaml"
    path.write_text(f"cors: {text if text.startswith('{') else '{' + text + '}'}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [line for line in info.value.lines if expected in line], info.value.lines
    assert all(line.startswith(f"{path}: cors.") for line in info.value.lines)


def test_check_config_names_the_cors_problem(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "cors: {allow_origins: ['https://ok.example', 'https://bad.example/app']}\n")
    out = GatewayProcess(tmp_path, (tmp_path / "gateway.yaml").read_text()).cli(
        "check-config", check=False)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"{tmp_path / 'gateway.yaml'}: cors.allow_origins[1]: an origin has no path, query or "
        "fragment: write 'https://bad.example'"]


def test_a_good_cors_config_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("cors: {allow_origins: ['HTTPS://App.Example.com', 'http://[::1]:8080'],"
                    " allow_methods: [get, post], allow_headers: ['*']}\n")
    cors = load_config(path, environ={}).cors
    assert cors is not None
    assert cors.allow_origins == ["https://app.example.com", "http://[::1]:8080"]
    assert cors.allow_methods == ["GET", "POST"]
    assert cors.allow_headers == ["*"] and cors.max_age_s == 600


# --- a real browser -----------------------------------------------------------------------
FETCH = """async ([url, key, model]) => {
  try {
    const r = await fetch(url + "/v1/chat/completions", {method: "POST",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify({model: model, messages: [{role: "user", content: "hi"}]})});
    return {status: r.status, body: await r.json(), requestId: r.headers.get("x-request-id"),
            remaining: r.headers.get("x-ratelimit-remaining-requests")};
  } catch (e) { return {blocked: String(e)}; }
}"""


@pytest.fixture(scope="module")
def page_server(page_port: int) -> Iterator[int]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>app</title><p>a browser app</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield page_port
    server.shutdown()
    server.server_close()


def test_a_page_on_another_origin_calls_the_gateway_with_fetch(
        cors_gw: GatewayProcess, key: str, page_server: int) -> None:
    from tests.ui.test_ui_browser import ARGS, CHROMIUM, _ensure_chromium

    _ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"http://localhost:{page_server}/")  # allowed origin
            ok = page.evaluate(FETCH, [cors_gw.url, key, "gpt-4o-mini"])
            error = page.evaluate(FETCH, [cors_gw.url, key, "no-such-model"])
            page.goto(f"http://127.0.0.1:{page_server}/")  # same page, origin not allowed
            refused = page.evaluate(FETCH, [cors_gw.url, key, "gpt-4o-mini"])
        finally:
            browser.close()
    assert ok["status"] == 200, ok
    assert ok["body"]["choices"][0]["message"]["content"] == "fake: hi"
    assert ok["requestId"] and ok["remaining"] is not None  # exposed to the script
    assert error["status"] == 404 and error["body"]["error"]["code"] == "model_not_found"
    assert "blocked" in refused, refused
