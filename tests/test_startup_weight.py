"""Speed by construction: a demo-only gateway never imports litellm, and tiktoken works offline."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway_proc import REPO

PROBE = """
import sys
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
