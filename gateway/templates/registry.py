"""The process's view of every template: versions and labels in memory, refreshed on change.

The request path never touches the database: `resolve` and `render` read dicts. The
registry reloads (1) at once after a change made through this replica's admin API, and
(2) for changes made elsewhere (another replica, `gateway templates sync`), when a
background poll every `refresh_interval_s` (default 2 s) sees the change log grow — one
`SELECT count(*)` per interval, whatever the traffic. Versions are immutable, so a reload
keeps every already compiled version.

Labels: `{"version": V}` or with a canary `{"version": V, "canary": {"version": V2,
"percent": P}}`. With a canary, a request with a `user` goes to V2 when a hash of
(template, label, user) falls in the first P% of 10,000 buckets — the same user always
sees the same side, and raising P only moves users from V to V2, never back. A request
without `user` picks a side at random with probability P%.
A request naming neither `version` nor `label` gets the `production` label when the
template has one, else its latest version.

Rendering (`render`) starts on the event loop, where nearly every render ends within a few
microseconds; one that outgrows the loop's small budget (`sandbox.ON_LOOP_ITEMS`,
`sandbox.ON_LOOP_S`) is rendered again from the start in this registry's render thread, with
the full budget, while the loop serves other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from gateway.background import cancel_and_wait
from gateway.errors import excerpt
from gateway.storage.outage import is_store_outage
from gateway.storage.templates import TemplateStore
from gateway.templates.errors import TemplateError, not_found
from gateway.templates.sandbox import MAX_TEXT, GatewaySandbox, MoveOffLoop, make_environment
from gateway.templates.versions import TemplateVersion
from gateway.timeutil import iso

log = logging.getLogger("gateway.templates")

DEFAULT_LABEL = "production"


def _database_down(exc: BaseException) -> bool:
    """Unreachable, or not migrated yet (a missing table): the poll retries either."""
    return isinstance(exc, SQLAlchemyError) or is_store_outage(exc)

BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    label: str
    version: int
    canary_version: int | None
    canary_percent: float | None
    updated_at: datetime | None
    updated_by: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Label:
        return cls(row["name"], row["label"], row["version"], row["canary_version"],
                   row["canary_percent"], row["updated_at"], row["updated_by"])

    def view(self) -> dict[str, Any]:
        canary = None
        if self.canary_version is not None:
            canary = {"version": self.canary_version, "percent": self.canary_percent}
        return {"name": self.name, "label": self.label, "version": self.version,
                "canary": canary, "updated_at": iso(self.updated_at),
                "updated_by": self.updated_by}

    def change_view(self) -> dict[str, Any]:
        """The label as an admin-change event records it (before or after a move)."""
        canary = None
        if self.canary_version is not None:
            canary = {"version": self.canary_version, "percent": self.canary_percent}
        return {"label": self.label, "version": self.version, "canary": canary}

    def pick(self, user: str | None) -> int:
        if self.canary_version is None or not self.canary_percent:
            return self.version
        if user:
            digest = hashlib.blake2b(f"{self.name}\x00{self.label}\x00{user}".encode(),
                                     digest_size=8).digest()
            bucket = int.from_bytes(digest, "big") % BUCKETS
        else:
            bucket = random.randrange(BUCKETS)
        return self.canary_version if bucket < self.canary_percent * BUCKETS / 100 \
            else self.version


@dataclass(frozen=True, slots=True)
class Snapshot:
    versions: Mapping[str, Mapping[int, TemplateVersion]]
    labels: Mapping[str, Mapping[str, Label]]
    latest: Mapping[str, int]


_EMPTY = Snapshot({}, {}, {})


class TemplateRegistry:
    def __init__(self, store: TemplateStore, *, max_output_chars: int = MAX_TEXT,
                 refresh_interval_s: float = 2.0, env: GatewaySandbox | None = None) -> None:
        self.store = store
        self.env = env or make_environment()
        self.max_output_chars = max_output_chars
        self.refresh_interval_s = refresh_interval_s
        self.snapshot = _EMPTY
        self.token: int | None = None
        self.pending_files: list[Any] = []  # prompt files not yet synced (database was down)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._known_ids: set[str] = set()
        # One thread: heavy renders wait for each other, never for (or as) the event loop.
        self._renderer: ThreadPoolExecutor | None = None

    # --- loading -------------------------------------------------------------------------
    async def reload(self) -> None:
        """Read the versions not known yet and every label (versions are immutable, so the
        known ones and their compiled templates stay)."""
        async with self._lock:
            token, rows, label_rows = await self.store.load(self._known_ids)
            versions = {name: dict(by_version)
                        for name, by_version in self.snapshot.versions.items()}
            for row in rows:
                versions.setdefault(row["name"], {})[row["version"]] = \
                    TemplateVersion.from_row(row)
            labels: dict[str, dict[str, Label]] = {}
            for row in label_rows:
                labels.setdefault(row["name"], {})[row["label"]] = Label.from_row(row)
            latest = {name: max(by_version) for name, by_version in versions.items()}
            self.snapshot = Snapshot(versions, labels, latest)
            self.token = token
            self._known_ids.update(row["id"] for row in rows)
            self._precompile()

    async def refresh(self) -> None:
        """Reload when the change log moved (one `count(*)`): admin reads use it, so every
        replica's admin API shows the current state."""
        if await self.store.change_token() != self.token:
            await self.reload()

    def _precompile(self) -> None:
        """Compile the versions requests will use (latest, labelled) ahead of the first one."""
        snap = self.snapshot
        wanted = {(n, v) for n, v in snap.latest.items()}
        for name, by_label in snap.labels.items():
            for lab in by_label.values():
                wanted.add((name, lab.version))
                if lab.canary_version is not None:
                    wanted.add((name, lab.canary_version))
        for name, version in wanted:
            found = snap.versions.get(name, {}).get(version)
            if found is not None:
                with contextlib.suppress(TemplateError):  # reported when it is used
                    found.compiled(self.env)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="template-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._renderer is not None:
            self._renderer.shutdown(wait=False, cancel_futures=True)
            self._renderer = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                if self.pending_files:
                    from gateway.templates.files import sync_files

                    await sync_files(self.store, self.pending_files)
                    self.pending_files = []
                    log.info("prompt files synced")
                await self.refresh()
            except Exception as exc:  # the poll outlives any failure (the next one retries)
                if _database_down(exc):
                    log.warning("template refresh failed", extra={"reason": type(exc).__name__})
                else:
                    log.exception("template refresh failed")

    # --- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.snapshot.versions)

    def labels_of(self, name: str) -> Mapping[str, Label]:
        return self.snapshot.labels.get(name, {})

    def versions_of(self, name: str) -> Mapping[int, TemplateVersion]:
        found = self.snapshot.versions.get(name)
        if found is None:
            raise not_found(name)
        return found

    def get(self, name: str, version: int) -> TemplateVersion:
        found = self.versions_of(name).get(version)
        if found is None:
            raise TemplateError(f"template {excerpt(name)} has no version {version}",
                                code="template_version_not_found", param="version")
        return found

    def latest(self, name: str) -> TemplateVersion:
        by_version = self.versions_of(name)
        return by_version[self.snapshot.latest[name]]

    def label(self, name: str, label: str) -> Label:
        self.versions_of(name)
        found = self.snapshot.labels.get(name, {}).get(label)
        if found is None:
            raise TemplateError(f"template {excerpt(name)} has no label {excerpt(label)}",
                                code="template_label_not_found", param="label")
        return found

    def resolve(self, name: str, *, version: int | None = None, label: str | None = None,
                user: str | None = None) -> TemplateVersion:
        """The version a request gets; `TemplateError` with param `name`/`version`/`label`."""
        if version is not None:
            return self.get(name, version)
        if label is not None:
            return self.get(name, self.label(name, label).pick(user))
        default = self.snapshot.labels.get(name, {}).get(DEFAULT_LABEL)
        if default is not None:
            return self.get(name, default.pick(user))
        return self.latest(name)

    async def render(self, found: TemplateVersion, variables: Any) -> list[dict[str, str]]:
        """The rendered messages; `TemplateError` (a 400) for bad variables or a render that
        breaks a sandbox rule or limit."""
        try:
            return found.render(self.env, variables, self.max_output_chars, on_loop=True)
        except MoveOffLoop:
            pass
        if self._renderer is None:
            self._renderer = ThreadPoolExecutor(1, thread_name_prefix="template-render")
        return await asyncio.get_running_loop().run_in_executor(
            self._renderer, found.render, self.env, variables, self.max_output_chars)

    async def startup(self, files: list[Any]) -> list[tuple[str, int, bool]]:
        """Sync the checked prompt files into SQL, load everything, start the refresh poll.
        With the database unreachable the gateway still starts (empty; `/readyz` says why)
        and the poll retries the sync."""
        from gateway.templates.files import sync_files

        synced: list[tuple[str, int, bool]] = []
        try:
            synced = await sync_files(self.store, files)
            await self.reload()
        except Exception as exc:
            if not _database_down(exc):
                raise
            self.pending_files = list(files)
            log.error("templates not loaded: database not ready (retrying)",
                      extra={"reason": type(exc).__name__})
        await self.start()
        return synced
