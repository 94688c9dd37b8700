"""The config and every file it points at, loaded for a command; exit 1 listing each problem."""

from __future__ import annotations

import sys

from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.settings import Settings


def print_problems(exc: ConfigError) -> None:
    for line in exc.lines:
        print(line, file=sys.stderr)


def load_all(settings: Settings) -> LoadedConfig:
    """`gateway.yaml` (GATEWAY_CONFIG), its policies and prompt files; exit 1 on problems."""
    from gateway.policies.store import policies_for
    from gateway.routing.deployments import native_problems
    from gateway.templates.files import prompt_files_for

    try:
        config = load_config(settings.config)
        if native_problems(config):
            raise ConfigError(native_problems(config))
        policies_for(config)
        prompt_files_for(config)
        return config
    except ConfigError as exc:
        print_problems(exc)
        raise SystemExit(1) from None
