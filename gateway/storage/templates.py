"""Template versions and labels in SQL. Versions are only ever inserted; labels move.

Every write also appends a row to `template_changes` in the same transaction, so a replica
learns that something changed from one cheap `count(*)`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ids import new_id
from gateway.storage.tables_templates import template_changes, template_labels, template_versions
from gateway.timeutil import utcnow

_RETRIES = 5  # a safety net (e.g. `gateway templates sync` beside a running SQLite gateway)
_LOCK_SPACE = 0x7E4D  # first key of the PostgreSQL advisory locks taken on template names


class TemplateExists(Exception):
    pass


class TemplateMissing(Exception):
    pass


def _version_row(doc: Mapping[str, Any], version: int, content_hash: str, source: str,
                 author: str | None) -> dict[str, Any]:
    return {"id": new_id("tpv"), "name": doc["name"], "version": version,
            "description": doc.get("description"), "model": doc.get("model"),
            "params": doc.get("params") or {}, "variables": doc.get("variables") or {},
            "messages": doc["messages"], "content_hash": content_hash, "source": source,
            "author_key_id": author, "created_at": utcnow()}


async def _log(conn: AsyncConnection, name: str, kind: str, *, version: int | None = None,
               label: str | None = None, detail: Any = None, actor: str | None = None) -> None:
    await conn.execute(insert(template_changes).values(
        name=name, kind=kind, version=version, label=label, detail=detail, actor=actor,
        at=utcnow()))


async def _lock_name(conn: AsyncConnection, name: str) -> None:
    """Serialise the writers of one template across replicas until the transaction ends.

    Without it, concurrent edits on several replicas read the same latest version and all
    but one lose on the unique index. SQLite needs nothing: it has one writer at a time."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"),
                           {"space": _LOCK_SPACE, "name": name})


async def _latest(conn: AsyncConnection, name: str) -> int | None:
    return (await conn.execute(select(func.max(template_versions.c.version))
                               .where(template_versions.c.name == name))).scalar()


T = TypeVar("T")


def _one_writer(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """The writers of this process take turns. SQLite needs it: a transaction that reads the
    latest version before it writes cannot wait for another writer, it fails (PostgreSQL
    writers on every replica also queue on `_lock_name`)."""
    @functools.wraps(method)
    async def one_at_a_time(self: TemplateStore, *args: Any, **kwargs: Any) -> T:
        async with self._writes:
            return await method(self, *args, **kwargs)
    return one_at_a_time


class TemplateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writes = asyncio.Lock()

    async def change_token(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count())
                                           .select_from(template_changes))).scalar() or 0)

    async def load(self, known: set[str] | frozenset[str] = frozenset()
                   ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """(change token, the versions whose id is not in `known`, every label), read in one
        transaction. Versions never change or go away, so what is known stays valid."""
        async with self.engine.begin() as conn:
            token = int((await conn.execute(select(func.count())
                                            .select_from(template_changes))).scalar() or 0)
            # Labels before versions: a label is set after its version exists, so every
            # version a label read here names is in the version read that follows.
            labels = [dict(r) for r in (await conn.execute(
                select(template_labels))).mappings()]
            ids = (await conn.execute(select(template_versions.c.id))).scalars().all()
            missing = [i for i in ids if i not in known]
            versions: list[dict[str, Any]] = []
            for start in range(0, len(missing), 500):
                chunk = missing[start:start + 500]
                versions.extend(dict(r) for r in (await conn.execute(
                    select(template_versions).where(template_versions.c.id.in_(chunk))
                )).mappings())
        return token, versions, labels

    async def history(self, name: str, limit: int = 200) -> list[dict[str, Any]]:
        """The template's changes, newest first: `{"kind": "version"|"label"|"unlabel",
        "version", "label", "detail", "actor", "at"}` (who moved which label when)."""
        c = template_changes
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(c.c.kind, c.c.version, c.c.label, c.c.detail, c.c.actor, c.c.at)
                .where(c.c.name == name).order_by(c.c.id.desc()).limit(limit))
            return [dict(r) for r in rows.mappings()]

    @_one_writer
    async def add_version(self, doc: Mapping[str, Any], content_hash: str, *, author: str | None,
                          source: str = "api", first: bool) -> dict[str, Any]:
        """Insert the next version (`first`: the template must not exist yet, else it must)."""
        name = doc["name"]
        for attempt in range(_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    await _lock_name(conn, name)
                    latest = await _latest(conn, name)
                    if first and latest is not None:
                        raise TemplateExists(name)
                    if not first and latest is None:
                        raise TemplateMissing(name)
                    row = _version_row(doc, (latest or 0) + 1, content_hash, source, author)
                    await conn.execute(insert(template_versions).values(**row))
                    await _log(conn, name, "version", version=row["version"], actor=author)
                return row
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @_one_writer
    async def sync_file(self, doc: Mapping[str, Any], content_hash: str,
                        path: str | None = None) -> tuple[int, bool]:
        """A file's content as a version: `(version, created)`. A new version only when the
        content differs from the newest version that came from a file (edits made through
        the API are kept; the same file synced twice changes nothing)."""
        name = doc["name"]
        for attempt in range(_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    await _lock_name(conn, name)
                    # One statement, one snapshot: the newest file version and the newest
                    # version must not come from two points in time (READ COMMITTED).
                    rows = (await conn.execute(
                        select(template_versions.c.version, template_versions.c.source,
                               template_versions.c.content_hash)
                        .where(template_versions.c.name == name)
                        .order_by(template_versions.c.version.desc()))).all()
                    last_file = next((r for r in rows if r.source == "file"), None)
                    if last_file is not None and last_file.content_hash == content_hash:
                        return last_file.version, False
                    latest = rows[0].version if rows else 0
                    row = _version_row(doc, latest + 1, content_hash, "file", None)
                    await conn.execute(insert(template_versions).values(**row))
                    await _log(conn, name, "version", version=row["version"],
                               detail={"source": "file", "path": path} if path
                               else {"source": "file"})
                return row["version"], True
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @_one_writer
    async def set_label(self, name: str, label: str, version: int, canary_version: int | None,
                        canary_percent: float | None, actor: str | None) -> dict[str, Any]:
        row = {"name": name, "label": label, "version": version,
               "canary_version": canary_version, "canary_percent": canary_percent,
               "updated_at": utcnow(), "updated_by": actor}
        detail = None if canary_version is None else {"canary_version": canary_version,
                                                      "canary_percent": canary_percent}
        for attempt in range(_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    await _lock_name(conn, name)
                    result = await conn.execute(
                        update(template_labels)
                        .where(template_labels.c.name == name, template_labels.c.label == label)
                        .values(**row))
                    if result.rowcount == 0:
                        await conn.execute(insert(template_labels).values(**row))
                    await _log(conn, name, "label", version=version, label=label,
                               detail=detail, actor=actor)
                return row
            except IntegrityError:  # two first sets of one label at once: update next time
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @_one_writer
    async def delete_label(self, name: str, label: str, actor: str | None) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(template_labels).where(
                template_labels.c.name == name, template_labels.c.label == label))
            if result.rowcount == 0:
                return False
            await _log(conn, name, "unlabel", label=label, actor=actor)
        return True
