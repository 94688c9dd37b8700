"""`gateway serve`: the HTTP server, and the "ready: what next" lines a newcomer sees.

The ready banner goes to stderr (logs are JSON lines on stdout) once the server listens,
when stderr is a terminal or `--banner` is given (`make run` gives it). It never prints an
admin key other than the documented development default.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import Any

from gateway.settings import DEV_ADMIN_KEY, Settings

EXAMPLE_BODY = '{"model": "demo", "messages": [{"role": "user", "content": "hello"}]}'


def banner(settings: Settings, host: str, port: int, models: list[str]) -> str:
    """What to do next, once the gateway is ready (no secret but the dev default key)."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    base = f"http://{shown_host}:{port}"
    admin = settings.admin_key.get_secret_value() if settings.admin_key else None
    if admin == DEV_ADMIN_KEY:
        key_line = (f"admin key  {DEV_ADMIN_KEY}  (the development default: set "
                    "GATEWAY_ADMIN_KEY to your own secret for anything but a laptop)")
        bearer = DEV_ADMIN_KEY
    elif admin:
        key_line = "admin key  the GATEWAY_ADMIN_KEY you set (not shown)"
        bearer = "$GATEWAY_ADMIN_KEY"
    else:
        key_line = ("admin key  none: set GATEWAY_ADMIN_KEY to use the admin API and the UI "
                    "(or create keys with `gateway keys create`)")
        bearer = "<your key>"
    model = "demo" if "demo" in models else (models[0] if models else "demo")
    body = EXAMPLE_BODY.replace('"demo"', f'"{model}"')
    auth = f"authorization: Bearer {bearer}"
    curl = (f"curl -s {base}/v1/chat/completions -H {_quote(auth, bearer)} "
            f"-H 'content-type: application/json' -d {shlex.quote(body)}")
    lines = [
        f"gateway ready on {base}  (models: {', '.join(models) or 'none'})",
        f"  {key_line}",
        f"  try it     {curl}",
        f"  web UI     {base}/ui  (sign in with an admin or compliance key)",
        f"  OpenAI SDK OpenAI(base_url=\"{base}/v1\", api_key=...)",
        "  stop       Ctrl-C",
    ]
    return "\n".join(lines)


def _quote(text: str, bearer: str) -> str:
    # "$GATEWAY_ADMIN_KEY" must expand in the user's shell: double quotes then
    return f'"{text}"' if bearer.startswith("$") else shlex.quote(text)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateway import allocator, logs
    from gateway.app import create_app
    from gateway.commands.config_files import load_all
    from gateway.web.request_head import BoundedHttpToolsProtocol

    config = load_all(settings)
    logs.configure(settings.log_level)
    allocator.tune()  # before the app starts its threads: few malloc arenas, trimmed
    app = create_app(settings, config)
    host = args.host or settings.host
    port = args.port or settings.port
    show = args.banner or sys.stderr.isatty()
    on_ready = (lambda: print(banner(settings, host, port, list(config.models)),
                              file=sys.stderr, flush=True)) if show else None
    server = _server(uvicorn.Config(
        app, host=host, port=port, loop="uvloop",
        http=BoundedHttpToolsProtocol,  # httptools, with the request head bounded
        lifespan="on",
        access_log=False, server_header=False, log_config=None, timeout_graceful_shutdown=30,
        # No X-Forwarded-* rewriting of the client address: nothing here uses it,
        # and the UI reads X-Forwarded-Proto itself for its Secure cookie.
        proxy_headers=False), on_ready)
    server.run()
    return 0 if server.started or not server.should_exit else 1


def _server(config: Any, on_ready: Callable[[], None] | None) -> Any:
    """uvicorn's server, calling `on_ready` once it listens with the app started."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if on_ready is not None and not self.should_exit:
                on_ready()

    return Server(config)


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="run the HTTP server",
        description="Serve the gateway: the OpenAI-compatible /v1 API, /admin, /audit, "
                    "/ui, /healthz, /readyz and /metrics.",
        epilog="examples:\n"
               "  gateway serve                        on GATEWAY_HOST:GATEWAY_PORT "
               "(127.0.0.1:4000)\n"
               "  gateway serve --host 0.0.0.0 --port 8080\n"
               "  GATEWAY_CONFIG=/etc/gateway/gateway.yaml gateway serve",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: GATEWAY_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None,
                       help="port to listen on (default: GATEWAY_PORT, else 4000)")
    serve.add_argument("--banner", action="store_true",
                       help="print the URL, the admin key in use and a first request on "
                            "stderr once ready (always on when stderr is a terminal)")
    serve.set_defaults(func=cmd_serve)
