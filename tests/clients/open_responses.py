"""Run the Open Responses compliance CLI (openresponses/openresponses) against the gateway:
on the demo model, and on the fake upstream by translation (Chat) and by passthrough.

    make compliance OPENRESPONSES_DIR=path/to/openresponses   # a checkout with `bun install`

The suite is TypeScript run with bun, published only as a GitHub repository (no npm
package), so it needs a checkout; its `node_modules/.bin/bun` or a `bun` on PATH runs it.
Only its scenarios over `POST /v1/responses` apply: the WebSocket mode and
`/v1/responses/compact` are not part of the gateway's contract (`SKIPPED`). Exit status 1
when any applicable scenario fails on any model.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.responses import PATHS, start_responses_gateway

APPLICABLE = ("basic-response", "assistant-phase", "response-output-phase-schema",
              "streaming-response", "system-prompt", "tool-calling", "tool-calling-streaming",
              "image-input", "multi-turn")
SKIPPED = "websocket-*, compact-* (WebSocket mode and /responses/compact: not served)"


def _bun(suite: Path) -> str:
    local = suite / "node_modules" / ".bin" / "bun"
    found = str(local) if local.exists() else shutil.which("bun")
    if found is None:
        sys.exit(f"no bun: run `npm install` (or `bun install`) in {suite}")
    return found


def _ids(suite: Path) -> list[str]:
    """The applicable scenario ids this version of the suite has (ids come and go)."""
    text = (suite / "src" / "lib" / "compliance-tests.ts").read_text(encoding="utf-8")
    return [i for i in APPLICABLE if f'id: "{i}"' in text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", required=True, type=Path,
                        help="an openresponses/openresponses checkout")
    args = parser.parse_args(argv)
    suite = args.suite.resolve()
    bun, ids = _bun(suite), _ids(suite)
    print(f"scenarios: {', '.join(ids)}; skipped: {SKIPPED}", flush=True)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for rg in start_responses_gateway(Path(tmp)):
            rg.upstream.set_fault("tool-on-auto")  # a model that uses the tool it is offered
            for model in PATHS:
                print(f"\n--- {model}: {PATHS[model]}", flush=True)
                done = subprocess.run(
                    [bun, "run", "bin/compliance-test.ts", "--base-url", rg.gateway.base_url,
                     "--api-key", rg.key, "--model", model, "--filter", ",".join(ids)],
                    cwd=suite, timeout=300, check=False)
                if done.returncode != 0:
                    failed.append(model)
    print(f"\nOpen Responses compliance: {'FAILED on ' + ', '.join(failed) if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
