"""A newcomer's first commands on a fresh copy of the repository.

`make install` in a copy of the tracked files, in a venv made by the interpreter's own
`python3 -m venv` (its bundled pip, not upgraded), resolving offline from a folder that
holds the lock's files and, beside them, newer releases the index published since
(`poison`): the install must take exactly the locked files. Then `gateway --version`,
`gateway check-config`, and `make run` up to its ready banner, whose `curl` line works.

The lock's files are fetched once per interpreter with `pip download --require-hashes`
(pip's cache makes this cheap after `make test` installed them) into `.cache/wheelhouse/`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.gateway_proc import free_port

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PYTHON_311 = Path(sys.executable).resolve()
PYTHON_312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")

pytestmark = pytest.mark.timeout(600)


def _tracked_copy(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new untracked ones not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def _wheel(name: str, version: str, extras: tuple[str, ...] = ()) -> bytes:
    """A minimal, valid wheel: what an index could publish tomorrow."""
    dist = f"{name}-{version}.dist-info"
    provides = "".join(f"Provides-Extra: {extra}\n" for extra in extras)
    files = {
        f"{name}/__init__.py": b"raise ImportError('a release the lock does not pin')\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            f"{provides}".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", record)
    return buf.getvalue()


def _pinned(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", lock.read_text(), re.M))


def _wheelhouse(python: Path) -> Path:
    """The lock's files for `python`, downloaded (hash-checked) once into .cache/."""
    tag = subprocess.run([python, "-c", "import sys; print(f'cp{sys.version_info[0]}"
                          "{sys.version_info[1]}')"], check=True, capture_output=True,
                         text=True).stdout.strip()
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    house = REPO / ".cache" / "wheelhouse" / f"{tag}-{digest}"
    done = house / ".complete"
    if not done.exists():
        house.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        "--no-deps", "--require-hashes", "--only-binary", ":all:",
                        "-r", LOCK, "-d", house], check=True)
        done.touch()
    return house


# Newer releases than the lock pins, inside the ranges that dependents ask for (litellm:
# `httpx[http2]>=0.28.0,<1.0`, the extra that broke the install when httpx 0.29 came out).
POISON = (("httpx", "0.99.0", ("http2",)), ("h2", "4.99.0", ()), ("pydantic", "2.99.0", ()))


def _poison(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, version, extras in POISON:
        (folder / f"{name}-{version}-py3-none-any.whl").write_bytes(
            _wheel(name, version, extras))
    return folder


def _offline_env(houses: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "GATEWAY_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=" ".join(str(h) for h in houses),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", **extra)
    return env


def _bundled_pip(python: Path) -> str:
    return subprocess.run([python, "-c", "import ensurepip; print(ensurepip.version())"],
                          check=True, capture_output=True, text=True).stdout.strip()


def _pip_version(repo: Path) -> str:
    out = subprocess.run([repo / ".venv/bin/python", "-m", "pip", "--version"], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def _make_install(repo: Path, python: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["make", "install", f"PYTHON={python}"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout + done.stderr


def _installed_versions(repo: Path) -> dict[str, str]:
    out = subprocess.run([repo / ".venv/bin/python", "-m", "pip", "list", "--format=freeze",
                          "--exclude-editable"], check=True, capture_output=True,
                         text=True).stdout
    return {n.lower().replace("_", "-"): v for n, v in re.findall(r"^(\S+)==(\S+)$", out, re.M)}


def _assert_exactly_the_lock(repo: Path) -> None:
    installed = _installed_versions(repo)
    for name, version in _pinned(LOCK).items():
        assert installed.get(name.lower().replace("_", "-")) == version, name
    assert all(installed[name] != version for name, version, _ in POISON)


def test_bundled_pip_installs_exactly_the_lock_offline_and_make_run_serves(tmp_path: Path
                                                                            ) -> None:
    house = _wheelhouse(PYTHON_311)
    repo = _tracked_copy(tmp_path / "repo")
    env = _offline_env([house, _poison(tmp_path / "poison")])
    _make_install(repo, PYTHON_311, env)

    assert _pip_version(repo) == _bundled_pip(PYTHON_311)  # not upgraded by the recipe
    _assert_exactly_the_lock(repo)
    version = subprocess.run([repo / ".venv/bin/gateway", "--version"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip() == "gateway 0.1.0"
    checked = subprocess.run([repo / ".venv/bin/gateway", "check-config"], cwd=repo, env=env,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "gateway.yaml: ok" in checked.stdout

    _make_run_prints_a_working_first_request(repo, env)


def _make_run_prints_a_working_first_request(repo: Path, env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(["make", "run"], cwd=repo, env={**env, "GATEWAY_PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("stop"):
                break
        text = "".join(lines)
        assert f"gateway ready on http://127.0.0.1:{port}" in text, text
        assert "admin key  dev-admin-key" in text
        assert f"http://127.0.0.1:{port}/ui" in text
        curl = next(line.split("try it", 1)[1].strip() for line in lines if "try it" in line)
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True,
                                timeout=30)
        assert '"choices"' in answer.stdout and "offline demo model" in answer.stdout, \
            answer.stdout + answer.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("variant", ["python3.12-bundled-pip", "newest-pip"])
def test_install_is_the_same_with_python_312_and_with_the_newest_pip(tmp_path: Path,
                                                                     variant: str) -> None:
    if variant == "python3.12-bundled-pip":
        if not PYTHON_312.exists():
            pytest.skip(f"{PYTHON_312} is not on this machine")
        python, houses = PYTHON_312, [_wheelhouse(PYTHON_312)]
    else:
        newest = tmp_path / "newest-pip"
        subprocess.run([PYTHON_311, "-m", "pip", "download", "-q", "--no-deps",
                        "--disable-pip-version-check", "--only-binary", ":all:", "pip",
                        "-d", newest], check=True)
        python, houses = PYTHON_311, [_wheelhouse(PYTHON_311), newest]
    repo = _tracked_copy(tmp_path / "repo")
    env = _offline_env([*houses, _poison(tmp_path / "poison")])
    if variant == "newest-pip":
        subprocess.run([python, "-m", "venv", repo / ".venv"], check=True)
        subprocess.run([repo / ".venv/bin/python", "-m", "pip", "install", "-q", "-U", "pip"],
                       env=env, check=True)
        assert _pip_version(repo) != _bundled_pip(python)
    _make_install(repo, python, env)
    _assert_exactly_the_lock(repo)
    version = subprocess.run([repo / ".venv/bin/gateway", "--version"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip() == "gateway 0.1.0"
