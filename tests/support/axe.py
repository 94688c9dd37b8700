"""axe-core for the accessibility tests: the pinned npm package (tests/a11y/package.json and
its lock, so `npm ci` checks the tarball's integrity), installed into `.cache/axe-core` by
`make test` or, when missing, by the first test that needs it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PINNED = REPO / "tests" / "a11y"
TARGET = REPO / ".cache" / "axe-core"
AXE_JS = TARGET / "node_modules" / "axe-core" / "axe.min.js"
# What fails a page: serious and critical violations (axe's own impact levels).
FAILING_IMPACTS = frozenset({"serious", "critical"})


def axe_source() -> str:
    """The text of axe.min.js, installing the pinned version first if needed."""
    if not AXE_JS.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot fetch axe-core for the a11y checks")
        TARGET.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PINNED / name, TARGET / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=TARGET,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and AXE_JS.exists(), done.stderr[-2000:]
    return AXE_JS.read_text()


def serious_violations(page: Any, source: str) -> list[str]:
    """Run axe (WCAG 2.x A and AA rules) on the page; one line per serious or critical
    violation and element. The script is added as a DevTools script, not a page script:
    the UI's CSP (script-src 'self') stays as it is."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(source)
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {node}"
            for v in result if v["impact"] in FAILING_IMPACTS for node in v["nodes"]]
