"""A real `gateway serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(sys.executable).parent / "gateway"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_thread(coro_fn: Any) -> Any:
    """Run an async function to completion on a fresh loop in another thread (safe in any test)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_fn())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class GatewayProcess:
    def __init__(self, workdir: Path, config_yaml: str, *, admin_key: str = "test-admin-key",
                 database_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(config_yaml)
        self.admin_key = admin_key
        self.database_url = database_url or f"sqlite:///{workdir}/gateway.db"
        self.port = free_port()
        self.log_path = workdir / "gateway.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({"GATEWAY_CONFIG": str(self.config_path),
                    "GATEWAY_DATABASE_URL": self.database_url,
                    "GATEWAY_ADMIN_KEY": self.admin_key,
                    "GATEWAY_PORT": str(self.port),
                    # tokenizers and litellm load on first use: faster starts (a test that
                    # checks the preload sets it back on)
                    "GATEWAY_PRELOAD": "false",
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        env.update(self.extra_env)
        return env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(GATEWAY_BIN), *args], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, check=check, timeout=120)

    def migrate(self) -> None:
        self.cli("migrate")

    def start(self, *, migrate: bool = True, timeout_s: float = 20) -> GatewayProcess:
        if migrate:
            self.migrate()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen([str(GATEWAY_BIN), "serve"], env=self.env, cwd=self.workdir,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- admin helpers -------------------------------------------------------------------
    def admin(self, method: str, path: str, json: Any = None, key: str | None = None
              ) -> httpx.Response:
        headers = {"authorization": f"Bearer {key or self.admin_key}"}
        return httpx.request(method, self.url + path, json=json, headers=headers, timeout=30)

    def create_key(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", "test-key")
        r = self.admin("POST", "/admin/keys", fields)
        assert r.status_code == 201, r.text
        return r.json()

    def create_team(self, **fields: Any) -> dict[str, Any]:
        r = self.admin("POST", "/admin/teams", fields)
        assert r.status_code == 201, r.text
        return r.json()

    # --- audit helpers -------------------------------------------------------------------
    def audit_rows(self, where: str = "", params: dict[str, Any] | None = None
                   ) -> list[dict[str, Any]]:
        from sqlalchemy import text

        from gateway.storage.engine import create_engine

        async def fetch() -> list[dict[str, Any]]:
            engine = create_engine(self.database_url, pool_size=1)
            try:
                async with engine.connect() as conn:
                    sql = "SELECT * FROM audit_events" + (f" WHERE {where}" if where else "")
                    result = await conn.execute(text(sql + " ORDER BY id"), params or {})
                    return [dict(r) for r in result.mappings()]
            finally:
                await engine.dispose()

        return run_in_thread(fetch)

    def wait_for_audit(self, where: str, params: dict[str, Any] | None = None, *,
                       count: int = 1, timeout_s: float = 10) -> list[dict[str, Any]]:
        """Poll until exactly `count` events match (the writer batches every ~50 ms)."""
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.audit_rows(where, params)
            if len(rows) >= count:
                time.sleep(0.2)  # and no more than count arrive
                rows = self.audit_rows(where, params)
                assert len(rows) == count, rows
                return rows
            time.sleep(0.05)
        raise AssertionError(f"expected {count} audit events where {where!r}, got {len(rows)}")
