"""`gateway.yaml`: parsed once, strictly (unknown keys are errors), into frozen objects.

A bad file raises `ConfigError`, whose lines read `FILE: key.path: reason`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

SECRET_REF_PREFIX = "env:"


class ConfigError(Exception):
    """A configuration problem; `lines` holds one `FILE: key.path: reason` per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pricing(_Strict):
    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class Deployment(_Strict):
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: str | None = None
    weight: float = Field(default=1, gt=0)
    timeout_s: float = Field(default=60, gt=0)
    connect_timeout_s: float = Field(default=5, gt=0)
    first_token_timeout_s: float = Field(default=30, gt=0)
    idle_timeout_s: float = Field(default=30, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    # Forward `/v1/responses` bodies as they are (only `model` rewritten): the upstream
    # speaks the OpenAI Responses API itself. Otherwise they are translated to Chat.
    native_responses: bool = False
    # Messages API: served as it comes (None: Anthropic-family deployments do) and the
    # `anthropic-beta` flags such a deployment may get (None: every flag, unchanged).
    native_messages: bool | None = None
    anthropic_beta_allowlist: list[str] | None = None

    @field_validator("api_key")
    @classmethod
    def _secret_by_reference(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(SECRET_REF_PREFIX):
            raise ValueError("secrets only by reference: write env:VARIABLE_NAME")
        return value

    @property
    def provider(self) -> str:
        """The litellm provider prefix (`openai` when the model string has none)."""
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"

    @property
    def upstream_model(self) -> str:
        """The model name the provider knows (the model string without its prefix)."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    @property
    def speaks_messages_by_family(self) -> bool:
        return self.provider == "anthropic" or (
            self.provider in ("bedrock", "vertex_ai") and "claude" in self.upstream_model)

    @property
    def speaks_messages(self) -> bool:
        """Serves Anthropic's Messages API as it comes: `native_messages`, else Anthropic
        itself and Claude on Bedrock or Vertex AI."""
        if self.native_messages is not None:
            return self.native_messages
        return self.speaks_messages_by_family


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    deployments: list[Deployment] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    pricing: Pricing | None = None
    strategy: Literal["weighted", "least-busy", "lowest-latency", "ordered"] | None = None


class RouterConfig(_Strict):
    strategy: Literal["weighted", "least-busy", "lowest-latency", "ordered"] = "weighted"
    retries: int = Field(default=2, ge=0, le=10)
    total_timeout_s: float = Field(default=120, gt=0)
    cooldown_s: float = Field(default=30, ge=0)
    failures_to_cooldown: int = Field(default=5, ge=1)


class ServerConfig(_Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_json_depth: int = Field(default=64, ge=2, le=1000)
    max_messages: int = Field(default=2048, ge=1)
    max_n: int = Field(default=8, ge=1)


class LimitsConfig(_Strict):
    on_redis_error: Literal["local_share", "closed", "open"] = "local_share"
    replicas: int = Field(default=1, ge=1)
    unpriced_models: Literal["block", "warn", "zero"] = "warn"


class PiiConfig(_Strict):
    on_detector_error: Literal["block"] = "block"


class AuditConfig(_Strict):
    bodies: Literal["none", "redacted", "full"] = "redacted"
    spool_dir: str = "data/spool"
    spool_max_mb: int = Field(default=1024, gt=0)
    on_store_error: Literal["spool", "closed"] = "spool"
    retention_days: int = Field(default=365, ge=1)


def _cors_origin(value: str) -> str:
    """An origin as a browser sends it (`https://app.example.com`, `http://localhost:5173`),
    lowercased, or `*`. Why not, without repeating the value."""
    if value == "*":
        return value
    if value == "null":
        raise ValueError("the 'null' origin (sandboxed frames, file: pages) cannot be allowed: "
                         "any page can make its requests carry it")
    if "*" in value:
        raise ValueError("wildcards are not supported: list each origin, or '*' alone")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname \
            or _check_url(value) is not None:
        raise ValueError("must be an origin: http:// or https://, a host and an optional port")
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    if value.lower() != origin:
        raise ValueError(f"an origin has no path, query or fragment: write {origin!r}")
    if port == {"http": 80, "https": 443}[parts.scheme.lower()]:
        raise ValueError("browsers do not send the default port: write "
                         f"'{parts.scheme.lower()}://{parts.hostname}'")
    return origin


CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _cors_method(value: str) -> str:
    if value != "*" and value.upper() not in CORS_METHODS:
        raise ValueError(f"must be one of {', '.join(CORS_METHODS)}, or '*'")
    return value.upper()


def _cors_header(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError("must be a header name (letters, digits, '-'), or '*'")
    return value.lower()


def _star_alone(values: list[str]) -> list[str]:
    if "*" in values and len(values) > 1:
        raise ValueError("'*' already allows everything: list it alone")
    return values


class CorsConfig(_Strict):
    """Browser apps on these origins may call the gateway. Never with credentials: keys
    travel in `Authorization`, so no `Access-Control-Allow-Credentials` is ever sent."""

    allow_origins: Annotated[list[Annotated[str, AfterValidator(_cors_origin)]],
                             AfterValidator(_star_alone)] = Field(min_length=1)
    allow_methods: Annotated[list[Annotated[str, AfterValidator(_cors_method)]],
                             AfterValidator(_star_alone)] = Field(default=["GET", "POST"],
                                                                  min_length=1)
    allow_headers: Annotated[list[Annotated[str, AfterValidator(_cors_header)]],
                             AfterValidator(_star_alone)] = Field(
        default=["authorization", "content-type", "x-request-id"])
    max_age_s: int = Field(default=600, ge=0, le=86400)


class ResponsesConfig(_Strict):
    """`/v1/responses`: how long stored responses are kept (`store: true`)."""

    retention_days: int = Field(default=30, ge=1)


class GatewayConfig(_Strict):
    models: list[ModelConfig] = Field(default_factory=list)
    router: RouterConfig = RouterConfig()
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    pii: PiiConfig = PiiConfig()
    prompts_dir: str = "prompts"
    policies_dir: str = "policies"
    audit: AuditConfig = AuditConfig()
    cors: CorsConfig | None = None
    responses: ResponsesConfig = ResponsesConfig()


class LoadedConfig:
    """The verified config plus what was derived from it (resolved secrets, paths)."""

    def __init__(self, source: str, base_dir: Path, raw: GatewayConfig,
                 secrets: Mapping[tuple[int, int], str | None],
                 api_bases: Mapping[tuple[int, int], str | None]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.raw = raw
        self.models = {m.name: m for m in raw.models}
        self._secrets = secrets
        self._api_bases = api_bases

    @property
    def router(self) -> RouterConfig:
        return self.raw.router

    @property
    def server(self) -> ServerConfig:
        return self.raw.server

    @property
    def limits(self) -> LimitsConfig:
        return self.raw.limits

    @property
    def audit(self) -> AuditConfig:
        return self.raw.audit

    @property
    def cors(self) -> CorsConfig | None:
        return self.raw.cors

    @property
    def responses(self) -> ResponsesConfig:
        return self.raw.responses

    def path(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p

    def api_key(self, model_index: int, deployment_index: int) -> str | None:
        return self._secrets.get((model_index, deployment_index))

    def api_base(self, model_index: int, deployment_index: int) -> str | None:
        return self._api_bases.get((model_index, deployment_index))


class YamlProblem(ValueError):
    """Text that does not load as YAML: `where` (`line N` or `(file)`) and `reason`."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, every way it can fail as one `YamlProblem`: syntax, nesting deeper
    than the parser recurses, an integer of more digits than `int()` converts."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise YamlProblem(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}"
                          ) from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise YamlProblem("(file)", "not valid YAML: nested too deeply") from None
    except ValueError:  # int() refuses over 4300 digits
        raise YamlProblem("(file)", "not valid YAML: a number too long to read") from None


def read_yaml_mapping(path: Path, shown: str) -> tuple[dict[str, Any] | None, list[str]]:
    """A YAML file that must hold a mapping, or `FILE: where: reason` lines saying why not."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{shown}: (file): cannot read: {exc}"]
    except YamlProblem as exc:
        return None, [f"{shown}: {exc.where}: {exc.reason}"]
    if not isinstance(data, dict):
        return None, [f"{shown}: (top level): must be a mapping"]
    return data, []


def dotted(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a key path: `models[0].deployments[1].api_base`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _reason(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _resolve_ref(value: str, environ: Mapping[str, str]) -> str:
    name = value[len(SECRET_REF_PREFIX):]
    if not name:
        raise ValueError("empty environment variable name after env:")
    if name not in environ or environ[name] == "":
        raise ValueError(f"environment variable {name} is not set")
    return environ[name]


# A host name: dot-separated labels of letters, digits, `-` (not at either end) and `_`
# (container service names), each at most 63 characters. IP literals are checked apart.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _check_url(value: str) -> str | None:
    """Why an operator's `api_base` is not a usable destination, or None.

    An http(s) URL with a host and an optional port and path; nothing that would travel
    with every request or change where it goes: no user:password@, no query, no fragment,
    no whitespace or control characters. Private and loopback hosts are fine (local model
    servers). The reason never repeats the value: it may hold a secret.
    """
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        return "must be an ASCII URL without spaces or control characters (IDN hosts in punycode)"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "must be an http:// or https:// URL with a valid host and port"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@): use api_key"
    if parts.query or parts.fragment or "?" in value or "#" in value:
        return "must not have a query string or a fragment: paths are appended to it"
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        return "must have a port between 1 and 65535"
    host = parts.hostname or ""
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "must have a valid IPv6 address between [ ]"
        return None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return "must have a valid host name"
    return None


def _semantic_errors(cfg: GatewayConfig, environ: Mapping[str, str], base_dir: Path
                     ) -> tuple[list[tuple[str, str]], dict, dict]:
    problems: list[tuple[str, str]] = []
    secrets: dict[tuple[int, int], str | None] = {}
    bases: dict[tuple[int, int], str | None] = {}
    names: dict[str, int] = {}
    for i, model in enumerate(cfg.models):
        if model.name in names:
            problems.append((f"models[{i}].name", f"duplicate model name {model.name!r}"))
        names[model.name] = i
        for j, dep in enumerate(model.deployments):
            where = f"models[{i}].deployments[{j}]"
            problems.extend(_messages_problems(dep, where))
            if dep.api_key is not None:
                try:
                    secrets[(i, j)] = _resolve_ref(dep.api_key, environ)
                except ValueError as exc:
                    problems.append((f"{where}.api_key", str(exc)))
            if dep.api_base is not None:
                try:
                    base = (_resolve_ref(dep.api_base, environ)
                            if dep.api_base.startswith(SECRET_REF_PREFIX) else dep.api_base)
                except ValueError as exc:
                    problems.append((f"{where}.api_base", str(exc)))
                    continue
                bad = _check_url(base)
                if bad:
                    problems.append((f"{where}.api_base", bad))
                bases[(i, j)] = base.rstrip("/")
    for i, model in enumerate(cfg.models):
        for k, fb in enumerate(model.fallbacks):
            if fb not in names:
                problems.append((f"models[{i}].fallbacks[{k}]", f"unknown model {fb!r}"))
            elif fb == model.name:
                problems.append((f"models[{i}].fallbacks[{k}]",
                                 "a model cannot fall back to itself"))
    cycle = _fallback_cycle(cfg)
    if cycle:
        i = names[cycle[0]]
        problems.append((f"models[{i}].fallbacks", "fallback cycle: " + " -> ".join(cycle)))
    for key in ("prompts_dir", "policies_dir"):
        p = Path(getattr(cfg, key))
        p = p if p.is_absolute() else base_dir / p
        if p.exists() and not p.is_dir():
            problems.append((key, f"{p} is not a folder"))
    return problems, secrets, bases


def _messages_problems(dep: Deployment, where: str) -> list[tuple[str, str]]:
    """`native_messages: true` needs an upstream that can speak Messages."""
    if dep.native_messages and dep.provider == "demo":
        return [(f"{where}.native_messages", "the demo provider speaks OpenAI Chat: Messages "
                 "requests to it are translated")]
    if dep.native_messages and dep.api_base is None and not dep.speaks_messages_by_family:
        return [(f"{where}.native_messages", "needs an api_base that serves /v1/messages")]
    return []


def _fallback_cycle(cfg: GatewayConfig) -> list[str] | None:
    graph = {m.name: [f for f in m.fallbacks if f != m.name] for m in cfg.models}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
            if state.get(nxt) is None and nxt in graph:
                found = visit(nxt, [*path, nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for name in graph:
        if state.get(name) is None:
            found = visit(name, [name])
            if found:
                return found
    return None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read and verify `gateway.yaml`; raise `ConfigError` listing every problem."""
    source = str(path)
    environ = os.environ if environ is None else environ
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: (file): not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: (file): cannot read: {exc.strerror}"]) from None
    try:
        data = load_yaml(text)
    except YamlProblem as exc:
        raise ConfigError([f"{source}: {exc.where}: {exc.reason}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: (top level): must be a mapping"])
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{source}: {dotted(e['loc'])}: {_reason(e)}"
                           for e in exc.errors()]) from None
    base_dir = file.resolve().parent
    problems, secrets, bases = _semantic_errors(cfg, environ, base_dir)
    if problems:
        raise ConfigError([f"{source}: {where}: {why}" for where, why in problems])
    return LoadedConfig(source, base_dir, cfg, secrets, bases)
