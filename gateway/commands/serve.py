"""`gateway serve`: the HTTP server, and the "ready: what next" lines a newcomer sees.

The ready banner goes to stderr (logs are JSON lines on stdout) once the server listens,
when stderr is a terminal or `--banner` is given (`make run` gives it). It never prints an
admin key other than the documented development default.
"""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
from collections.abc import Callable
from typing import Any

from gateway.settings import DEV_ADMIN_KEY, Settings

MAX_WORKERS = 256  # worker indexes travel as one byte
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
    # No GC pass while starting: imports and the preload make millions of objects that live
    # as long as the process, and passes over them cost about a second of start-up here.
    # The app's start-up ends with one collect, a freeze and `gc.enable()` (`app.py`).
    gc.disable()
    from gateway import logs
    from gateway.app import create_app  # noqa: F401 - imported before any fork: shared pages
    from gateway.commands.config_files import load_all

    workers = args.workers if args.workers is not None else settings.workers
    if not 1 <= workers <= MAX_WORKERS:
        print(f"gateway serve: --workers must be between 1 and {MAX_WORKERS}", file=sys.stderr)
        return 2
    if workers > 1 and not settings.redis_url:
        print(f"gateway serve: --workers {workers} needs GATEWAY_REDIS_URL: without Redis "
              "each worker would keep its own rate-limit and budget counters (run one "
              "worker, or point GATEWAY_REDIS_URL at a Redis)", file=sys.stderr)
        return 2
    config = load_all(settings)
    logs.configure(settings.log_level)
    host = args.host or settings.host
    port = args.port or settings.port
    show = args.banner or sys.stderr.isatty()

    def announce(port: int) -> Callable[[], None] | None:
        if not show:
            return None
        return lambda: print(banner(settings, host, port, list(config.models)),
                             file=sys.stderr, flush=True)

    if workers == 1:
        return _serve_one(settings, config, host, port, None, announce(port))

    from gateway.commands.workers import Supervisor, reuseport_socket

    try:
        held = reuseport_socket(host, port, first=True)  # one error here, not N
    except OSError as exc:  # in use, also by another `serve --workers` (see reuseport_socket)
        print(f"gateway serve: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    port = held.getsockname()[1]
    settings = settings.model_copy(update={"workers": workers})

    def run_worker(index: int, ready: Callable[[], None]) -> int:
        held.close()
        worker = settings.model_copy(update={"worker": index})
        return _serve_one(worker, config, host, port, reuseport_socket(host, port), ready)

    gc.enable()  # the supervisor; each worker disables it again until it is ready
    try:
        return Supervisor(workers, run_worker, announce(port)).run()
    finally:
        held.close()


def _serve_one(settings: Settings, config: Any, host: str, port: int, sock: Any,
               on_ready: Callable[[], None] | None) -> int:
    """One gateway process: the whole app on `sock` (uvicorn binds host:port when None)."""
    import uvicorn

    from gateway import allocator
    from gateway.app import create_app
    from gateway.web.request_head import BoundedHttpToolsProtocol

    allocator.tune()  # before the app starts its threads: few malloc arenas, trimmed
    gc.disable()  # until the app is ready (see cmd_serve)
    app = create_app(settings, config)
    server = _server(uvicorn.Config(
        app, host=host, port=port, loop="uvloop",
        http=BoundedHttpToolsProtocol,  # httptools, with the request head bounded
        lifespan="on",
        access_log=False, server_header=False, log_config=None, timeout_graceful_shutdown=30,
        # No X-Forwarded-* rewriting of the client address: nothing here uses it,
        # and the UI reads X-Forwarded-Proto itself for its Secure cookie.
        proxy_headers=False), on_ready)
    server.run(sockets=[sock] if sock is not None else None)
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
               "  GATEWAY_REDIS_URL=redis://127.0.0.1:6379/0 gateway serve --workers 4\n"
               "  GATEWAY_CONFIG=/etc/gateway/gateway.yaml gateway serve",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: GATEWAY_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None,
                       help="port to listen on (default: GATEWAY_PORT, else 4000)")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="run N gateway processes on the port, one per core (default: "
                            "GATEWAY_WORKERS, else 1); N > 1 needs GATEWAY_REDIS_URL")
    serve.add_argument("--banner", action="store_true",
                       help="print the URL, the admin key in use and a first request on "
                            "stderr once ready (always on when stderr is a terminal)")
    serve.set_defaults(func=cmd_serve)
