"""The local append-only spool: segment files of framed records, fsynced in group commits.

Layout of `spool_dir` (one process per folder, held with `flock` on `LOCK`):

    replica          this spool's chain name, `<replica id>-<6 hex>`, made once
    ack              how far the shipper got: {"segment", "offset", "seq"}. Rewritten without
                     fsync: after a crash the shipper re-sends a little, inserts are idempotent.
    seg-<seq>.log    records: 4-byte length, 4-byte CRC-32, JSON payload. A segment opens with
                     a header record {"h": {"seq", "hash"}}: the chain head before its first
                     event, so the head survives even when every older segment is deleted.

Only the committer thread appends; the shipper reads up to the committed (fsynced) size of each
segment, so it never sees a half-written record. A torn tail (power loss) is cut at start-up.
Segments wholly behind the ack position are deleted. `bytes` counts every file in the folder.

With fsync on, the active segment is kept zero-filled a little ahead of its end (`top_up`:
1 MiB steps, by the committer once a batch's answers are released). A group commit then
overwrites blocks the file already has, so `fdatasync` writes data only, with no file size or
block map to journal (about half the time of an appending one on the development VM's disk).
Zeros are no record (a zero length frame fails to parse), so a zero tail reads as the end of
a segment; it is cut when the segment is closed and at start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.chain import GENESIS

log = logging.getLogger("gateway.audit.spool")

FRAME = struct.Struct(">II")  # payload length, CRC-32 of the payload
_MAX_RECORD = 64 * 1024 * 1024
_SEGMENT_PREFIX, _SEGMENT_SUFFIX = "seg-", ".log"
_READ_CHUNK = 4 * 1024 * 1024
_ZERO_STEP = 1024 * 1024  # zero-filled room added to the active segment at a time
_ZERO_LOW = 256 * 1024  # top up when less than this is left
_NO_RECORD = bytes(FRAME.size)  # what a zero-filled tail starts with


class SpoolError(Exception):
    """The spool cannot be used (folder not writable, held by another process, …)."""


@dataclass(frozen=True, slots=True)
class Position:
    segment: str
    offset: int


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _segment_name(first_seq: int) -> str:
    return f"{_SEGMENT_PREFIX}{first_seq:020d}{_SEGMENT_SUFFIX}"


def _parse(data: bytes, start: int = 0, events: int | None = None
           ) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Complete, valid records in `data` from `start`: [(end offset, payload)], valid end.

    With `events`, it stops after that many event records (the rest is left unparsed)."""
    out: list[tuple[int, dict[str, Any]]] = []
    pos = start
    size = len(data)
    while pos + FRAME.size <= size and (events is None or events > 0):
        length, crc = FRAME.unpack_from(data, pos)
        end = pos + FRAME.size + length
        if length > _MAX_RECORD or end > size:
            break
        payload = data[pos + FRAME.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError:
            break
        out.append((end, record))
        pos = end
        if events is not None and "e" in record:
            events -= 1
    return out, pos


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Spool:
    def __init__(self, folder: Path, *, max_bytes: int, fsync: bool = True,
                 segment_bytes: int | None = None) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(64 * 1024, min(8 * 1024 * 1024,
                                                                  max_bytes // 4))
        self.replica = ""
        self.head_seq = 0
        self.head_hash = GENESIS
        self.acked_seq = 0
        self.bytes = 0
        self.is_open = False
        self._meta = threading.Lock()
        self._segments: list[str] = []
        self._sizes: dict[str, int] = {}
        self._first_seq: dict[str, int] = {}
        self._ack = Position("", 0)
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._allocated = 0  # file size of the active segment: its end plus the zero tail
        self._read_cache: tuple[str, int] | None = None  # (segment, fd)
        self._ack_bytes = 0

    # --- opening -----------------------------------------------------------------------
    def open(self, replica_hint: str | None = None) -> None:
        """Lock the folder, find the chain head and the ack position; raise `SpoolError`."""
        try:
            self._open(replica_hint)
        except SpoolError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise SpoolError(f"cannot use the audit spool at {self.folder}: {exc.strerror}"
                             ) from None

    def _open(self, replica_hint: str | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolError(f"the audit spool {self.folder} is in use by another process"
                             ) from None
        self.replica = self._replica_name(replica_hint)
        names = sorted(p.name for p in self.folder.iterdir()
                       if p.name.startswith(_SEGMENT_PREFIX) and p.name.endswith(_SEGMENT_SUFFIX))
        self._segments, self._sizes, self._first_seq = [], {}, {}
        for name in names:
            self._segments.append(name)
            self._sizes[name] = (self.folder / name).stat().st_size
            self._first_seq[name] = int(name[len(_SEGMENT_PREFIX):-len(_SEGMENT_SUFFIX)])
        while self._segments and not self._recover_tail(self._segments[-1]):
            # a crash while a segment was being started left it without its header: the
            # segment before it holds the chain head
            empty = self._segments.pop()
            os.unlink(self.folder / empty)
            del self._sizes[empty], self._first_seq[empty]
        if not self._segments:
            self._new_segment(0, GENESIS)
        active = self._segments[-1]
        self._fd = os.open(self.folder / active, os.O_WRONLY)
        self._allocated = self._sizes[active]
        self._load_ack()
        self.bytes = self._disk_bytes()
        ack = self.folder / "ack"
        self._ack_bytes = ack.stat().st_size if ack.exists() else 0
        self.is_open = True

    def _replica_name(self, hint: str | None) -> str:
        path = self.folder / "replica"
        if path.exists():
            name = path.read_text(encoding="utf-8").strip()
            if name:
                return name
        base = (hint or socket.gethostname() or "gateway").strip()[:56] or "gateway"
        name = f"{base}-{secrets.token_hex(3)}"
        tmp = self.folder / "replica.tmp"
        tmp.write_text(name + "\n", encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        return name

    def _recover_tail(self, name: str) -> bool:
        """Read the newest segment: cut a torn tail, take the chain head from its last record.

        False when it holds no record at all (not even its header)."""
        path = self.folder / name
        data = path.read_bytes()
        records, end = _parse(data)
        if end < len(data):
            if data.count(0, end) != len(data) - end:  # zeros are room made ahead, not a tear
                log.warning("audit spool: cutting a torn tail",
                            extra={"segment": name, "bytes": len(data) - end})
            with open(path, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
            self._sizes[name] = end
        for _, record in reversed(records):
            if "e" in record:
                self.head_seq, self.head_hash = record["e"]["seq"], record["e"]["hash"]
                return True
            if "h" in record:
                self.head_seq, self.head_hash = record["h"]["seq"], record["h"]["hash"]
                return True
        if self._first_seq[name] == 1 and len(self._segments) == 1:  # the very first one
            with open(path, "ab") as fh:
                fh.write(frame(orjson.dumps({"h": {"seq": 0, "hash": GENESIS}})))
                os.fsync(fh.fileno())
            self._sizes[name] = path.stat().st_size
            self.head_seq, self.head_hash = 0, GENESIS
            return True
        if len(self._segments) == 1:
            raise SpoolError(f"audit spool segment {name} has no header: cannot continue "
                             "its hash chain")
        return False

    def _load_ack(self) -> None:
        first = self._segments[0]
        self._ack = Position(first, 0)
        self.acked_seq = self._first_seq[first] - 1
        path = self.folder / "ack"
        try:
            saved = orjson.loads(path.read_bytes())
            pos = Position(str(saved["segment"]), int(saved["offset"]))
            seq = int(saved["seq"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if pos.segment in self._sizes and 0 <= pos.offset <= self._sizes[pos.segment]:
            self._ack = pos
            self.acked_seq = seq

    def _new_segment(self, head_seq: int, head_hash: str) -> None:
        name = _segment_name(head_seq + 1)
        path = self.folder / name
        self._cut_zero_tail()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            header = frame(orjson.dumps({"h": {"seq": head_seq, "hash": head_hash}}))
            _write_all(fd, header, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        _fsync_dir(self.folder)
        with self._meta:
            self._segments.append(name)
            self._sizes[name] = len(header)
            self._first_seq[name] = head_seq + 1
            self.bytes += len(header)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._allocated = len(header)
        self.head_seq, self.head_hash = head_seq, head_hash

    def _disk_bytes(self) -> int:
        total = 0
        for p in self.folder.iterdir():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    # --- writing (committer thread only) -----------------------------------------------
    def room(self) -> int:
        """Bytes that may still be appended under `max_bytes` (a rotation header kept aside)."""
        return self.max_bytes - self.bytes - 256 + self._zero_room()

    def _zero_room(self) -> int:
        """Zero-filled bytes past the end of the active segment (already counted in `bytes`)."""
        if not self._segments:
            return 0
        return max(0, self._allocated - self._sizes[self._segments[-1]])

    def top_up(self) -> None:
        """Zero-fill the next stretch of the active segment when little is left (fsync only).

        Committer thread, between batches; failures are harmless (appends then grow the
        file as they would without it)."""
        if not self.fsync or self._fd is None or self._zero_room() >= _ZERO_LOW:
            return
        step = min(_ZERO_STEP, self.segment_bytes - self._allocated,
                   self.max_bytes - self.bytes - 256)
        if step < FRAME.size:
            return
        try:
            _write_all(self._fd, bytes(step), self._allocated)
            os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._allocated)
            return
        with self._meta:
            self._allocated += step
            self.bytes += step

    def _cut_zero_tail(self) -> None:
        """Give back the zero tail of the active segment before it is closed."""
        if self._fd is None or not self._zero_room():
            return
        end = self._sizes[self._segments[-1]]
        try:
            os.ftruncate(self._fd, end)  # not synced: a tail that comes back reads as the end
        except OSError:
            return
        with self._meta:
            self.bytes -= self._allocated - end
            self._allocated = end

    def append(self, frames: list[bytes], head_seq: int, head_hash: str) -> None:
        """Write records in one go and make them durable; raise OSError (nothing committed)."""
        if not frames:
            return
        assert self._fd is not None
        active = self._segments[-1]
        data = b"".join(frames)
        before = self._sizes[active]
        end = before + len(data)
        try:
            _write_all(self._fd, data, before)
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # nothing of the batch may survive a restart
                os.ftruncate(self._fd, before)
            with self._meta:
                self.bytes += before - self._allocated
                self._allocated = before
            raise
        with self._meta:
            self._sizes[active] = end
            if end > self._allocated:
                self.bytes += end - self._allocated
                self._allocated = end
        self.head_seq, self.head_hash = head_seq, head_hash
        if self._sizes[active] >= self.segment_bytes:
            try:
                self._new_segment(head_seq, head_hash)
            except OSError as exc:  # the batch is durable all the same; rotate next time
                log.error("audit spool: cannot start a new segment",
                          extra={"reason": exc.strerror})

    # --- reading and acknowledging (shipper) -------------------------------------------
    @property
    def ack_position(self) -> Position:
        return self._ack

    def read(self, pos: Position, max_records: int) -> tuple[list[dict[str, Any]], Position]:
        """Up to `max_records` committed event records from `pos`, and the position after."""
        out: list[dict[str, Any]] = []
        with self._meta:
            segments = list(self._segments)
            sizes = dict(self._sizes)
        if pos.segment not in sizes:
            if not segments:
                return out, pos
            pos = Position(segments[0], 0)
        seg, off = pos.segment, pos.offset
        while len(out) < max_records:
            limit = sizes[seg]
            if off >= limit:
                idx = segments.index(seg)
                if idx + 1 >= len(segments):
                    break
                seg, off = segments[idx + 1], 0
                continue
            data = self._pread(seg, off, min(limit - off, _READ_CHUNK))
            records, end = _parse(data, events=max_records - len(out))
            if not records and len(data) >= FRAME.size:  # one record larger than a chunk
                length = FRAME.unpack_from(data, 0)[0]
                if FRAME.size + length <= limit - off and length <= _MAX_RECORD:
                    data = self._pread(seg, off, FRAME.size + length)
                    records, end = _parse(data)
            if not records and data.startswith(_NO_RECORD):  # a zero tail: the segment ends
                off = limit
                continue
            if not records:
                log.error("audit spool: unreadable record, skipping the rest of the segment",
                          extra={"segment": seg, "offset": off})
                off = limit
                continue
            for rec_end, record in records:
                if "e" in record:
                    out.append(record)
                off_after = off + rec_end
                if len(out) >= max_records:
                    off = off_after
                    break
            else:
                off += end
        return out, Position(seg, off)

    def _pread(self, segment: str, offset: int, size: int) -> bytes:
        cached = self._read_cache
        if cached is None or cached[0] != segment:
            if cached is not None:
                with contextlib.suppress(OSError):
                    os.close(cached[1])
            fd = os.open(self.folder / segment, os.O_RDONLY)
            self._read_cache = cached = (segment, fd)
        return os.pread(cached[1], size, offset)

    def ack(self, pos: Position, seq: int) -> None:
        """Everything before `pos` is in the database: delete older segments, record it.

        Runs in a worker thread: `acked_seq` moves last, so a waiter on the loop that sees
        nothing pending also sees the shipped segments gone and the ack file written."""
        with self._meta:
            index = self._segments.index(pos.segment) if pos.segment in self._segments else 0
            doomed = self._segments[:index]
            self._segments = self._segments[index:]
            for name in doomed:
                self.bytes -= self._sizes.pop(name, 0)
                self._first_seq.pop(name, None)
        for name in doomed:
            if self._read_cache is not None and self._read_cache[0] == name:
                with contextlib.suppress(OSError):
                    os.close(self._read_cache[1])
                self._read_cache = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)
        state = orjson.dumps({"segment": pos.segment, "offset": pos.offset, "seq": seq})
        tmp = self.folder / "ack.tmp"
        tmp.write_bytes(state)
        os.replace(tmp, self.folder / "ack")
        with self._meta:
            self.bytes += len(state) - self._ack_bytes
            self._ack_bytes = len(state)
        self._ack = pos
        self.acked_seq = seq

    @property
    def pending(self) -> int:
        return self.head_seq - self.acked_seq

    def close(self) -> None:
        self.is_open = False
        for fd in (self._fd, self._read_cache[1] if self._read_cache else None):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = None
        self._read_cache = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
