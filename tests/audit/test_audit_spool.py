"""The audit writer's parts on real files and a real SQLite database: durable group commits,
replay without loss or duplicates, torn tails, segment rotation, a full spool, odd values,
bodies by policy."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from gateway.audit.bodies import BodyRecorder, body_text
from gateway.audit.chain import Hasher
from gateway.audit.committer import current_tickets
from gateway.audit.spool import Spool, SpoolError, frame
from gateway.audit.verify import verify_chains
from gateway.audit.writer import AuditWriter
from gateway.core.audit_event import AuditEvent
from gateway.migrate import upgrade
from gateway.storage.engine import create_engine
from gateway.storage.tables import audit_bodies, audit_events, audit_pii
from gateway.telemetry.metrics import Metrics
from tests.support.contexts import make_ctx


def _event(i: int, **extra: Any) -> dict[str, Any]:
    opened = AuditEvent(f"unit-{i}", "/v1/chat/completions")
    event = opened.fields
    event.update(key_id="key_1", model_requested="demo", model_served="demo", attempts=1,
                 input_tokens=3, output_tokens=4, total_tokens=7, cost_nanos=11)
    opened.close(200)
    event.update(extra)
    return event


async def _db(path: Path, migrate: bool = True) -> tuple[str, Any]:
    url = f"sqlite:///{path}"
    if migrate:
        await asyncio.to_thread(upgrade, url)
    return url, create_engine(url)


async def _count(engine: Any, table: Any = audit_events) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


def _writer(engine: Any, spool: Path, **kw: Any) -> AuditWriter:
    kw.setdefault("flush_interval_s", 0.02)
    return AuditWriter(engine, spool_dir=spool, **kw)


async def test_events_wait_in_the_spool_and_replay_exactly_once(tmp_path: Path) -> None:
    _, unmigrated = await _db(tmp_path / "gw.db", migrate=False)  # no tables: inserts fail
    spool = tmp_path / "spool"
    first = _writer(unmigrated, spool)
    await first.start()
    for i in range(40):
        first.submit(_event(i))
    await first.committer.barrier()
    assert first.spool.pending == 40 and first.depth == 40
    await first.stop(timeout_s=2)  # the database cannot take them: they stay on disk
    await unmigrated.dispose()

    _, engine = await _db(tmp_path / "gw.db")
    second = _writer(engine, spool)
    await second.start()
    assert await second.flush(timeout_s=30)
    assert await _count(engine) == 40 and second.depth == 0
    await second.stop()
    (spool / "ack").unlink()  # forget how far shipping got: everything is sent again
    third = _writer(engine, spool)
    await third.start()
    third.submit(_event(99))
    assert await third.flush(timeout_s=30)
    await third.stop()
    assert await _count(engine) == 41  # the replay wrote nothing twice
    result = await verify_chains(engine, Hasher())
    assert result.ok and result.events_checked == 41
    async with engine.connect() as conn:
        seqs = [r[0] for r in await conn.execute(select(audit_events.c.seq)
                                                 .order_by(audit_events.c.seq))]
    assert seqs == list(range(1, 42))
    await engine.dispose()


async def test_a_request_waits_until_its_event_is_on_disk(tmp_path: Path) -> None:
    _, engine = await _db(tmp_path / "gw.db")
    writer = _writer(engine, tmp_path / "spool", flush_interval_s=60)
    await writer.start()
    tickets: list[asyncio.Future[bool]] = []
    token = current_tickets.set(tickets)
    try:
        event = _event(1)
        writer.submit(event)
    finally:
        current_tickets.reset(token)
    assert len(tickets) == 1
    assert await asyncio.wait_for(tickets[0], 10) is True
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("seg-*.log"))
    assert event["id"].encode() in on_disk
    assert await _count(engine) == 0  # durable locally; SQL comes with the next flush
    await writer.stop()
    assert await _count(engine) == 1
    await engine.dispose()


async def test_a_torn_tail_is_cut_and_the_chain_goes_on(tmp_path: Path) -> None:
    _, engine = await _db(tmp_path / "gw.db")
    spool = tmp_path / "spool"
    writer = _writer(engine, spool)
    await writer.start()
    for i in range(5):
        writer.submit(_event(i))
    await writer.stop()
    (segment,) = sorted(spool.glob("seg-*.log"))
    with open(segment, "ab") as fh:  # half a record, as a power cut would leave it
        fh.write(b"\x00\x00\x01\x00\xde\xad\xbe\xef{\"e\": {\"id\"")
    writer = _writer(engine, spool)
    await writer.start()
    for i in range(5, 8):
        writer.submit(_event(i))
    assert await writer.flush(30)
    await writer.stop()
    assert await _count(engine) == 8
    assert (await verify_chains(engine, Hasher())).ok
    await engine.dispose()


async def test_the_active_segment_is_zero_filled_ahead_and_its_zero_tail_is_no_tear(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, engine = await _db(tmp_path / "gw.db")
    spool = tmp_path / "spool"
    writer = _writer(engine, spool)
    await writer.start()
    for i in range(5):
        writer.submit(_event(i))
    await writer.committer.barrier()
    await writer.committer.barrier()  # the zero-fill runs after the batch is settled
    (segment,) = sorted(spool.glob("seg-*.log"))
    data = segment.read_bytes()
    records = data.rstrip(b"\x00")
    assert len(data) - len(records) >= 256 * 1024  # room made ahead of the end: zeros
    assert writer.spool.bytes == sum(p.stat().st_size for p in spool.iterdir())
    await writer.stop()  # as after a kill: the zero tail stays on disk

    caplog.set_level("WARNING", logger="gateway.audit.spool")
    caplog.clear()
    writer = _writer(engine, spool)
    await writer.start()
    assert not [r for r in caplog.records if "torn" in r.getMessage()]
    for i in range(5, 9):
        writer.submit(_event(i))
    assert await writer.flush(30)
    await writer.stop()
    assert await _count(engine) == 9
    result = await verify_chains(engine, Hasher())
    assert result.ok and result.events_checked == 9
    await engine.dispose()


async def test_a_closed_segment_with_a_zero_tail_is_read_to_its_end(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, unmigrated = await _db(tmp_path / "gw.db", migrate=False)  # nothing ships
    spool = tmp_path / "spool"
    first = _writer(unmigrated, spool, spool_max_bytes=1024 * 1024)  # 256 KiB segments
    await first.start()
    for i in range(200):
        first.submit(_event(i, request_body={"text": "x" * 2000}))
        if i % 20 == 19:
            await first.committer.barrier()
    await first.stop(timeout_s=2)
    await unmigrated.dispose()
    oldest, *_rest = sorted(spool.glob("seg-*.log"))
    assert _rest  # rotated: the oldest segment is closed
    with open(oldest, "ab") as fh:  # its zero tail was not cut yet when the process died
        fh.write(bytes(64 * 1024))

    caplog.set_level("WARNING", logger="gateway.audit.spool")
    caplog.clear()
    _, engine = await _db(tmp_path / "gw.db")
    second = _writer(engine, spool)
    await second.start()
    assert await second.flush(30)
    await second.stop()
    assert not [r for r in caplog.records if r.name == "gateway.audit.spool"]
    assert await _count(engine) == 200
    assert (await verify_chains(engine, Hasher())).ok
    await engine.dispose()


async def test_a_segment_cut_short_while_being_started_is_dropped(tmp_path: Path) -> None:
    _, engine = await _db(tmp_path / "gw.db")
    spool = tmp_path / "spool"
    writer = _writer(engine, spool)
    await writer.start()
    for i in range(4):
        writer.submit(_event(i))
    await writer.stop()
    (spool / "seg-00000000000000000005.log").write_bytes(b"\x00\x00")  # header never made it
    writer = _writer(engine, spool)
    await writer.start()
    writer.submit(_event(4))
    assert await writer.flush(30)
    await writer.stop()
    assert await _count(engine) == 5
    assert (await verify_chains(engine, Hasher())).ok
    await engine.dispose()


async def test_segments_rotate_and_shipped_ones_are_deleted(tmp_path: Path) -> None:
    _, engine = await _db(tmp_path / "gw.db")
    spool = tmp_path / "spool"
    writer = _writer(engine, spool, spool_max_bytes=1024 * 1024,  # 256 KiB segments
                     flush_interval_s=60, batch_size=100_000)  # ship only when flushed
    await writer.start()
    for i in range(300):
        writer.submit(_event(i, request_body={"text": "x" * 2000}))
        if i % 30 == 29:  # ten group commits; a segment is closed after one passes 256 KiB
            await writer.committer.barrier()
    assert len(list(spool.glob("seg-*.log"))) >= 3
    assert await writer.flush(30)
    assert len(list(spool.glob("seg-*.log"))) == 1
    on_disk = sum(p.stat().st_size for p in spool.iterdir())
    assert writer.spool.bytes == on_disk
    await writer.stop()
    assert await _count(engine) == 300 and await _count(engine, audit_bodies) == 300
    assert (await verify_chains(engine, Hasher())).ok
    await engine.dispose()


async def test_a_full_spool_refuses_new_requests_and_never_grows_past_its_limit(
        tmp_path: Path) -> None:
    _, unmigrated = await _db(tmp_path / "gw.db", migrate=False)
    metrics = Metrics()
    limit = 256 * 1024
    spool = tmp_path / "spool"
    writer = _writer(unmigrated, spool, spool_max_bytes=limit, metrics=metrics,
                     body_limit=16 * 1024)
    await writer.start()
    assert writer.unavailable() is None
    tickets: list[asyncio.Future[bool]] = []
    token = current_tickets.set(tickets)
    try:
        for i in range(60):
            writer.submit(_event(i, request_body={"text": "y" * 8000}))
    finally:
        current_tickets.reset(token)
    results = await asyncio.gather(*tickets)
    assert True in results and False in results  # the first fit, the rest could not
    assert "full" in (writer.unavailable() or "")
    assert sum(p.stat().st_size for p in spool.iterdir()) <= limit
    assert metrics.audit_unavailable._value.get() == results.count(False)
    await writer.stop(timeout_s=1)
    await unmigrated.dispose()


async def test_one_spool_one_process(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool", max_bytes=1 << 20)
    first.open("a")
    second = Spool(tmp_path / "spool", max_bytes=1 << 20)
    with pytest.raises(SpoolError):
        second.open("b")
    first.close()
    second.open("b")  # free again
    assert second.replica == first.replica  # the chain name belongs to the folder
    second.close()


async def test_awkward_values_are_stored_and_still_verify(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    _, engine = await _db(tmp_path / "gw.db")
    writer = _writer(engine, tmp_path / "spool")
    await writer.start()
    odd = _event(1, user="nul\x00byte " + "u" * 1000, input_tokens=10**12,
                 latency_ms=float("nan"), template_version="7",
                 pii={"email": {"count": 2, "action": "redact"}, 3: ["\ud800"]},
                 request_body={"text": "bad \ud800 surrogate", 5: b"bytes"},
                 response_body="é" * 10)
    odd["received_at"] = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    writer.submit(odd)
    writer.submit({"id": "bare", "status_code": "not a number"})  # the minimum: still stored
    assert await writer.flush(30)
    await writer.stop()
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events).where(
            audit_events.c.id == odd["id"]))).mappings().one()
        kinds = {r[0] for r in await conn.execute(select(audit_pii.c.kind))}
        bare = (await conn.execute(select(audit_events).where(
            audit_events.c.id == "bare"))).mappings().one()
    assert "\x00" not in row["user"] and len(row["user"]) == 256
    assert row["input_tokens"] == 2**31 - 1 and row["latency_ms"] is None
    assert row["template_version"] == 7
    assert row["received_at"] == datetime(2026, 1, 2, 3, 4, 5, 600000)
    assert kinds == {"email", "3"}
    assert bare["status_code"] == 0 and bare["endpoint"] == ""
    assert (await verify_chains(engine, Hasher())).ok
    await engine.dispose()


def test_body_text_is_bounded_json() -> None:
    assert body_text(None) is None
    assert orjson.loads(body_text({"a": 1})) == {"a": 1}
    long = body_text({"a": "z" * 500}, limit=100)
    assert isinstance(orjson.loads(long), str) and "truncated" in orjson.loads(long)
    stream = orjson.loads(body_text("w" * 500, limit=100))
    assert stream.startswith("w" * 100) and "truncated: 500 characters" in stream


class _Policy:
    def __init__(self, bodies: str) -> None:
        self.audit = type("Rules", (), {"bodies": bodies})()


@pytest.mark.parametrize("mode,expected", [("redacted", "[EMAIL_1]"), ("full", "a@b.example"),
                                           ("none", None)])
def test_bodies_follow_the_effective_policy(mode: str, expected: str | None) -> None:
    sent = {"model": "demo", "messages": [{"role": "user", "content": "[EMAIL_1]"}]}
    original = {"model": "demo", "messages": [{"role": "user", "content": "a@b.example"}]}
    ctx = make_ctx("chat", sent, policy=_Policy(mode), original_body=original,
                   answer=["streamed ", "answer"])
    BodyRecorder("redacted")(ctx)
    event = ctx.event.fields
    if expected is None:
        assert "request_body" not in event and "response_body" not in event
    else:
        assert event["request_body"]["messages"][0]["content"] == expected
        assert event["response_body"] == "streamed answer"
    # no policy resolved (e.g. a 401): gateway.yaml's default applies
    bare = make_ctx("chat", sent)
    BodyRecorder("none")(bare)
    assert "request_body" not in bare.event.fields


async def test_verify_pages_through_a_chain_and_finds_a_duplicate_position(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.audit.verify as verify_module

    monkeypatch.setattr(verify_module, "_PAGE", 3)  # many page boundaries
    _, engine = await _db(tmp_path / "gw.db")
    writer = _writer(engine, tmp_path / "spool")
    await writer.start()
    for i in range(10):
        writer.submit(_event(i))
    assert await writer.flush(30)
    await writer.stop()
    result = await verify_chains(engine, Hasher())
    assert result.ok and result.events_checked == 10
    async with engine.begin() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.seq == 3))
               ).mappings().one()
        forged = dict(row, id=row["id"][:-1] + ("0" if row["id"][-1] != "0" else "1"))
        await conn.execute(audit_events.insert().values(**forged))
    result = await verify_chains(engine, Hasher())
    assert not result.ok and result.first_bad_id == forged["id"]
    await engine.dispose()


def test_canonical_times_keep_their_hashed_form() -> None:
    """Hashes of rows already stored depend on this exact text: it must never change."""
    from datetime import UTC, datetime, timedelta, timezone

    from gateway.audit.chain import _time_text

    assert _time_text(datetime(2026, 11, 26, 6, 0, 0, 5)) == "2026-11-26T06:00:00.000005"
    assert _time_text(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000000"
    plus_two = timezone(timedelta(hours=2))
    assert _time_text(datetime(2026, 1, 2, 5, 4, 5, tzinfo=plus_two)) == \
        _time_text(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000"


def test_reads_in_small_batches_return_every_event_once_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=64 * 1024)
    spool.open("r")
    for first in range(1, 301, 30):  # ten appends; ~1 KiB records: a few segments
        records = [frame(orjson.dumps({"e": {"seq": s, "pad": "p" * 1000}}))
                   for s in range(first, first + 30)]
        spool.append(records, first + 29, f"h{first + 29}")
    assert len(list((tmp_path / "spool").glob("seg-*.log"))) >= 3
    seen: list[int] = []
    pos = spool.ack_position
    while True:
        batch, pos = spool.read(pos, 7)
        if not batch:
            break
        assert len(batch) <= 7
        seen.extend(r["e"]["seq"] for r in batch)
    assert seen == list(range(1, 301))
    spool.close()
