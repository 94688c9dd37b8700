"""The `gateway` console script: wiring only; each command delegates to a module.

Exit codes: 0 success, 1 failure (bad config, …), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.commands import audit as audit_commands
from gateway.commands import keys as keys_commands
from gateway.commands import templates as templates_commands
from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.settings import Settings

# Feature command groups; each module has `register(subparsers)`.
COMMAND_MODULES = (keys_commands, templates_commands, audit_commands)


def _load(settings: Settings) -> LoadedConfig:
    """The config and every file it points at (policies, …); exit 1 listing each problem."""
    from gateway.policies.store import policies_for
    from gateway.templates.files import prompt_files_for

    try:
        config = load_config(settings.config)
        policies_for(config)
        prompt_files_for(config)
        return config
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    config = _load(settings)
    print(f"{config.source}: ok ({len(config.models)} models)")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.migrate import upgrade

    upgrade(settings.database_url)
    print("database is at the latest schema")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateway import logs
    from gateway.api.request_head import BoundedHttpToolsProtocol
    from gateway.app import create_app

    config = _load(settings)
    logs.configure(settings.log_level)
    app = create_app(settings, config)
    uvicorn.run(app, host=args.host or settings.host, port=args.port or settings.port,
                loop="uvloop", http=BoundedHttpToolsProtocol,  # httptools, heads bounded
                lifespan="on", access_log=False,
                server_header=False, log_config=None, timeout_graceful_shutdown=30,
                # No X-Forwarded-* rewriting of the client address: nothing here uses it,
                # and the UI reads X-Forwarded-Proto itself for its Secure cookie.
                proxy_headers=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="upgrade the database schema (Alembic head)") \
        .set_defaults(func=cmd_migrate)
    sub.add_parser("check-config", help="validate gateway.yaml; exit 1 on problems") \
        .set_defaults(func=cmd_check_config)

    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    return args.func(args, settings)
