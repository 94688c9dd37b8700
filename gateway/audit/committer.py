"""The committer: the one thread that appends audit events to the spool, in group commits.

`submit` (any thread, never blocks) queues an event. The thread takes everything queued,
sanitizes each event into a row, numbers it in this replica's chain (`seq`, `prev_hash`,
`hash`), writes the batch with one `write` and one `fdatasync`, then settles the batch's
futures on the event loop: True when durable, False when the event could not be stored (the
spool is full or cannot be written; the caller answers 503 `audit_unavailable` if it still can).
While it waits for the disk, the next batch gathers: a request waits about one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson

from gateway.audit.bodies import DEFAULT_LIMIT, body_text
from gateway.audit.chain import Hasher, row_from_event, to_wire
from gateway.audit.spool import Spool, SpoolError, frame

log = logging.getLogger("gateway.audit")

# Set by the durability middleware for one HTTP request: the futures of the audit events that
# request submitted, awaited before its response is let out.
current_tickets: ContextVar[list[asyncio.Future[bool]] | None] = ContextVar(
    "audit_tickets", default=None)

_REOPEN_INTERVAL_S = 1.0


class Committer:
    def __init__(self, spool: Spool, hasher: Hasher, *, replica_hint: str | None = None,
                 body_limit: int = DEFAULT_LIMIT, max_batch: int = 2000,
                 on_drop: Callable[[int, str], None] | None = None,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.hasher = hasher
        self.replica_hint = replica_hint
        self.body_limit = body_limit
        self.max_batch = max_batch
        self.on_drop = on_drop
        self.on_commit = on_commit
        self.error: str | None = "the audit spool is not open yet"
        self.writing_since: float | None = None
        self.committed = 0
        self.dropped = 0
        self._queue: deque[tuple[dict[str, Any] | None, asyncio.Future[bool] | None]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_open = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, event: dict[str, Any], future: asyncio.Future[bool] | None = None) -> None:
        with self._cond:
            self._queue.append((event, future))
            self._cond.notify()

    def barrier(self) -> asyncio.Future[bool]:
        """A future settled once everything submitted before it is committed (or dropped)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._cond:
            self._queue.append((None, future))
            self._cond.notify()
        if self._thread is None or not self._thread.is_alive():  # not running: nothing to wait
            future.set_result(False)
        return future

    def open_spool(self) -> None:
        """Open the spool now (start-up); on failure keep the reason and retry later."""
        try:
            self.spool.open(self.replica_hint)
            self.error = None
        except SpoolError as exc:
            self.error = str(exc)
            self._next_open = time.monotonic() + _REOPEN_INTERVAL_S
            log.error("audit spool unavailable", extra={"reason": self.error})

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="audit-committer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30) -> None:
        """Commit what is queued, then end the thread (blocking: call it off the loop)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    if self.error is not None:
                        self._cond.wait(_REOPEN_INTERVAL_S)
                        break
                    self._cond.wait()
                batch = [self._queue.popleft()
                         for _ in range(min(len(self._queue), self.max_batch))]
                stopping = self._stopping
            if not self.spool.is_open and time.monotonic() >= self._next_open:
                self.open_spool()
            if batch:
                try:
                    self._commit(batch)
                except Exception:  # a bug must not kill the thread: fail the batch, go on
                    log.exception("audit committer failed on a batch")
                    self._settle([], [f for e, f in batch if e is not None],
                                 [f for e, f in batch if e is None])
                if self.spool.is_open:
                    self.spool.top_up()  # the batch is settled: nobody waits on this
            elif stopping:
                return

    def _commit(self, batch: list[tuple[dict[str, Any] | None, asyncio.Future[bool] | None]]
                ) -> None:
        spool = self.spool
        frames: list[bytes] = []
        ok: list[asyncio.Future[bool] | None] = []
        failed: list[asyncio.Future[bool] | None] = []
        barriers: list[asyncio.Future[bool] | None] = []
        seq, prev = spool.head_seq, spool.head_hash
        room = spool.room() if spool.is_open else -1
        reason = "the audit spool cannot be written"
        for event, future in batch:
            if event is None:
                barriers.append(future)
                continue
            if not spool.is_open:
                failed.append(future)
                continue
            try:
                record, digest = self._encode(event, seq + 1, prev)
            except Exception:
                log.exception("audit event could not be encoded",
                              extra={"event_id": event.get("id")})
                failed.append(future)
                continue
            if len(record) > room:
                reason = "the audit spool is full"
                failed.append(future)
                continue
            room -= len(record)
            seq, prev = seq + 1, digest
            frames.append(record)
            ok.append(future)
        if frames:
            self.writing_since = time.monotonic()
            try:
                spool.append(frames, seq, prev)
                self.committed += len(frames)
            except OSError as exc:
                self.error = f"the audit spool cannot be written ({exc.strerror})"
                reason = self.error
                log.error("audit spool write failed", extra={"reason": self.error})
                spool.close()
                self._next_open = time.monotonic() + _REOPEN_INTERVAL_S
                failed.extend(ok)
                ok = []
            finally:
                self.writing_since = None
        if failed:
            self.dropped += len(failed)
            if self.on_drop is not None:
                self.on_drop(len(failed), reason)
        self._settle(ok, failed, barriers)

    def _encode(self, event: dict[str, Any], seq: int, prev: str) -> tuple[bytes, str]:
        try:
            return self._encode_row(row_from_event(event), event, seq, prev)
        except (TypeError, orjson.JSONEncodeError):  # e.g. a lone surrogate: clean everything
            return self._encode_row(row_from_event(event, strict=True), event, seq, prev)

    def _encode_row(self, row: dict[str, Any], event: dict[str, Any], seq: int, prev: str
                    ) -> tuple[bytes, str]:
        request_body = body_text(event.get("request_body"), self.body_limit)
        response_body = body_text(event.get("response_body"), self.body_limit)
        row["replica"] = self.spool.replica
        row["seq"] = seq
        row["prev_hash"] = prev
        digest = self.hasher.row_hash(row, request_body, response_body)
        row["hash"] = digest
        payload: dict[str, Any] = {"e": to_wire(row)}
        if request_body is not None or response_body is not None:
            payload["rb"] = request_body
            payload["sb"] = response_body
        return frame(orjson.dumps(payload)), digest

    def _settle(self, ok: list[Any], failed: list[Any], barriers: list[Any]) -> None:
        loop = self._loop
        if self.on_commit is not None and ok:
            self.on_commit()
        if loop is None or not (ok or failed or barriers):
            return
        waiting = [f for f in ok if f is not None], [f for f in failed if f is not None], \
            [f for f in barriers if f is not None]
        if not any(waiting):
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle_futures, *waiting)


def _settle_futures(ok: list[asyncio.Future[bool]], failed: list[asyncio.Future[bool]],
                    barriers: list[asyncio.Future[bool]]) -> None:
    for group, value in ((ok, True), (failed, False), (barriers, True)):
        for future in group:
            if not future.done():
                future.set_result(value)
