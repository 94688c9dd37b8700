"""The CLI from any working directory: a database that is not usable is one line and exit 3,
nothing is created by a command that only reads, and every command documents itself."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.commands.database import EXIT_DATABASE
from tests.support.gateway_proc import GATEWAY_BIN, free_port

READ_COMMANDS = [
    ["audit", "verify"],
    ["audit", "query", "--limit", "5"],
    ["audit", "export", "--format", "csv"],
    ["keys", "list"],
]
WRITE_COMMANDS = [
    ["keys", "create", "--name", "x"],
    ["keys", "revoke", "key_nothing"],
    ["audit", "purge", "--days", "30"],
]


def _gateway(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([str(GATEWAY_BIN), *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == EXIT_DATABASE, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert lines[0].startswith("gateway: ")
    return lines[0]


@pytest.mark.parametrize("args", READ_COMMANDS + WRITE_COMMANDS, ids=" ".join)
def test_a_missing_database_is_one_line_and_exit_3_and_nothing_is_created(tmp_path: Path,
                                                                          args: list[str]
                                                                          ) -> None:
    line = _one_line(_gateway(args, tmp_path))
    assert "no database at" in line and "gateway migrate" in line
    assert list(tmp_path.iterdir()) == []  # no ./data/, no empty gateway.db


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_an_unmigrated_database_is_one_line_and_left_as_it_was(tmp_path: Path,
                                                               args: list[str]) -> None:
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    line = _one_line(_gateway(args, tmp_path, GATEWAY_DATABASE_URL=f"sqlite:///{db}"))
    assert "has no gateway schema: run `gateway migrate`" in line


def test_a_database_behind_the_latest_migration_says_so(tmp_path: Path) -> None:
    from gateway.migrate import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0001")
    line = _one_line(_gateway(["audit", "verify"], tmp_path, GATEWAY_DATABASE_URL=url))
    assert "not at the latest schema" in line and "gateway migrate" in line


@pytest.mark.parametrize("url", ["nonsense", "mysql://u:p@127.0.0.1/x", "sqlite://"])
def test_a_bad_url_is_one_line(tmp_path: Path, url: str) -> None:
    line = _one_line(_gateway(["audit", "verify"], tmp_path, GATEWAY_DATABASE_URL=url))
    assert "GATEWAY_DATABASE_URL" in line or "in-memory" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["audit", "verify"], ["migrate"]], ids=" ".join)
def test_an_unreachable_server_is_one_line_without_the_password(tmp_path: Path,
                                                                args: list[str]) -> None:
    url = f"postgresql://gw:hunter2secret@127.0.0.1:{free_port()}/gateway"
    line = _one_line(_gateway(args, tmp_path, GATEWAY_DATABASE_URL=url))
    assert "127.0.0.1" in line and "hunter2secret" not in line


def test_migrate_then_verify_from_another_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path}/gw.db"
    migrated = _gateway(["migrate"], elsewhere, GATEWAY_DATABASE_URL=url)
    assert migrated.returncode == 0, migrated.stderr
    verified = _gateway(["audit", "verify"], elsewhere, GATEWAY_DATABASE_URL=url)
    assert verified.returncode == 0, verified.stderr
    assert '"ok":true' in verified.stdout
    assert list(elsewhere.iterdir()) == []


def test_version(tmp_path: Path) -> None:
    out = _gateway(["--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "gateway 0.1.0"


def _parsers(parser: argparse.ArgumentParser, path: str = "gateway"
             ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


@pytest.mark.parametrize("path,parser", _parsers(build_parser()), ids=lambda p: p
                         if isinstance(p, str) else "")
def test_every_command_describes_each_flag_and_shows_an_example(
        path: str, parser: argparse.ArgumentParser) -> None:
    assert parser.description, f"{path}: no description"
    assert "example" in (parser.epilog or ""), f"{path}: no example in --help"
    assert path in (parser.epilog or "") or path == "gateway", \
        f"{path}: the example does not show the command"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{path} {choice.dest}: no help"
            continue
        assert action.help, f"{path}: {'/'.join(action.option_strings) or action.dest} " \
                            "has no help"
