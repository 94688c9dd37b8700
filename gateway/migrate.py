"""`gateway migrate`: Alembic upgrade head, from any working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Apply every pending migration (all branches: features add theirs independently)."""
    command.upgrade(alembic_config(database_url), revision)


def head_revisions() -> set[str]:
    """The revisions `upgrade` ends at (one per branch)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())
