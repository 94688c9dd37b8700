"""Speed by construction: a demo-only gateway never imports litellm, and tiktoken works offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.gateway_proc import REPO

PROBE = """
import sys
from pathlib import Path
from gateway.app import create_app
from gateway.config import load_config
from gateway.settings import Settings
import tempfile, os
d = tempfile.mkdtemp()
create_app(Settings(database_url=f"sqlite:///{d}/x.db"), load_config(sys.argv[1]))
from gateway import tokens
assert tokens.count_text("hello world") == 2
print("litellm" in sys.modules)
"""


def test_demo_gateway_does_not_import_litellm_and_counts_tokens_offline() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TIKTOKEN"))}
    env["HOME"] = "/nonexistent"  # no tiktoken cache to fall back on
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "gateway.yaml")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


GC_PROBE = """
import asyncio, gc
from gateway.cli import main
assert main(["migrate"]) == 0
from gateway.app import create_app
gc.disable()  # as `gateway serve` starts: no collector passes over the start-up objects
app = create_app()
async def serve():
    async with app.router.lifespan_context(app):
        print(gc.isenabled(), gc.get_freeze_count() > 0)
asyncio.run(serve())
"""


def test_the_collector_is_back_on_once_the_app_has_started(tmp_path: Path) -> None:
    """`gateway serve` turns the garbage collector off while it starts; the app's start-up
    must turn it on again (after freezing the start-up objects), or cyclic garbage would
    never be freed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path}/gc.db", GATEWAY_PRELOAD="false",
               GATEWAY_CONFIG=str(REPO / "gateway.yaml"))
    out = subprocess.run([sys.executable, "-c", GC_PROBE], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "True"], out.stdout
