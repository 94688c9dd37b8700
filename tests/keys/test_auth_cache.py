"""The key cache against a real SQLite file: a burst of requests on one key makes one lookup,
a revocation during a lookup is not undone by that lookup's answer, and while the store is
down a key is answered as this replica last saw it, or 503 `auth_unavailable`."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway.errors import AuthUnavailable, Unauthorized
from gateway.keys import authenticator as auth_module
from gateway.keys.authenticator import RETRY_AFTER_FAILURE_S, STALE_IF_ERROR_S, Authenticator
from gateway.migrate import upgrade
from gateway.storage.engine import create_engine
from gateway.storage.keys import KeyStore


class CountingKeyStore(KeyStore):
    """The real store, counting lookups; `gate` (when set) holds each answer until released."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.lookups = 0
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None  # raised by every lookup while set

    async def find_principal(self, secret_hash: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        if self.failure is not None:
            raise self.failure
        found = await super().find_principal(secret_hash)
        if self.gate is not None:
            await self.gate.wait()
        return found


@pytest.fixture
async def store(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/keys.db"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    try:
        yield CountingKeyStore(engine)
    finally:
        await engine.dispose()


async def test_a_burst_on_one_key_makes_one_lookup(store: CountingKeyStore) -> None:
    row, secret = await store.create({"name": "burst", "role": "app"})
    auth = Authenticator(store, None, ttl_s=60)
    principals = await asyncio.gather(*(auth.authenticate(f"Bearer {secret}")
                                        for _ in range(50)))
    assert {p.key_id for p in principals} == {row["id"]}
    assert store.lookups == 1

    bad = await asyncio.gather(*(auth.authenticate("Bearer sk-not-a-key") for _ in range(20)),
                               return_exceptions=True)
    assert all(isinstance(e, Unauthorized) for e in bad)
    assert store.lookups == 2


async def test_a_waiter_that_gives_up_does_not_cancel_the_others(
        store: CountingKeyStore) -> None:
    row, secret = await store.create({"name": "leaver", "role": "app"})
    auth = Authenticator(store, None, ttl_s=60)
    store.gate = asyncio.Event()
    first = asyncio.ensure_future(auth.authenticate(f"Bearer {secret}"))
    second = asyncio.ensure_future(auth.authenticate(f"Bearer {secret}"))
    await asyncio.sleep(0.01)
    first.cancel()
    store.gate.set()
    assert (await second).key_id == row["id"]
    assert store.lookups == 1


async def test_revocation_during_a_lookup_is_not_cached_over(store: CountingKeyStore) -> None:
    row, secret = await store.create({"name": "revoked-mid-lookup", "role": "app"})
    auth = Authenticator(store, None, ttl_s=60)
    store.gate = asyncio.Event()
    in_flight = asyncio.ensure_future(auth.authenticate(f"Bearer {secret}"))
    while store.lookups == 0 or not store.gate._waiters:  # read done, answer held
        await asyncio.sleep(0.005)
    await store.revoke(row["id"])
    auth.invalidate(row["id"])  # what the admin API does after a revocation
    store.gate.set()
    assert (await in_flight).key_id == row["id"]  # it read the row before the revocation
    store.gate = None
    with pytest.raises(Unauthorized, match="revoked"):
        await auth.authenticate(f"Bearer {secret}")  # that stale answer was not cached


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth_module, "time", fake)
    return fake


# (what this replica saw before the outage, how long before the last successful lookup it
# saw it, what the key gets while the store is down)
OUTAGE_CASES = [
    ("valid", 0, "ok"),
    ("valid", STALE_IF_ERROR_S - 5, "ok"),
    ("valid", STALE_IF_ERROR_S + 5, "unavailable"),
    ("revoked", 0, "unauthorized"),
    ("unknown", 0, "unauthorized"),
    ("unknown", STALE_IF_ERROR_S + 5, "unavailable"),
    ("never", 0, "unavailable"),
]


@pytest.mark.parametrize("seen,age_s,outcome", OUTAGE_CASES,
                         ids=[f"{s}-{int(a)}s-{o}" for s, a, o in OUTAGE_CASES])
async def test_during_an_outage_a_key_is_answered_as_last_seen(
        store: CountingKeyStore, clock: Clock, seen: str, age_s: float, outcome: str) -> None:
    row, secret = await store.create({"name": "seen", "role": "app"})
    if seen == "revoked":
        await store.revoke(row["id"])
    token = "sk-not-a-key" if seen == "unknown" else secret
    _, other = await store.create({"name": "other", "role": "app"})
    auth = Authenticator(store, None, ttl_s=2)
    if seen != "never":
        with contextlib.suppress(Unauthorized):
            await auth.authenticate(f"Bearer {token}")
    clock.now += age_s
    await auth.authenticate(f"Bearer {other}")  # the last successful lookup
    clock.now += 60  # every entry expired
    store.failure = ConnectionRefusedError(111, "Connect call failed")
    if outcome == "ok":
        assert (await auth.authenticate(f"Bearer {token}")).key_id == row["id"]
    elif outcome == "unauthorized":
        with pytest.raises(Unauthorized):
            await auth.authenticate(f"Bearer {token}")
    else:
        with pytest.raises(AuthUnavailable) as exc:
            await auth.authenticate(f"Bearer {token}")
        assert (exc.value.status_code, exc.value.code) == (503, "auth_unavailable")


async def test_after_a_failed_lookup_misses_skip_the_store_for_a_moment(
        store: CountingKeyStore, clock: Clock) -> None:
    row, secret = await store.create({"name": "back", "role": "app"})
    auth = Authenticator(store, None, ttl_s=2)
    store.failure = ConnectionRefusedError(111, "Connect call failed")
    for _ in range(5):
        with pytest.raises(AuthUnavailable):
            await auth.authenticate(f"Bearer {secret}")
    assert store.lookups == 1  # the other four did not wait for a connection that fails
    store.failure = None
    clock.now += RETRY_AFTER_FAILURE_S
    assert (await auth.authenticate(f"Bearer {secret}")).key_id == row["id"]
    assert store.lookups == 2


async def test_an_error_that_is_not_an_outage_is_not_hidden(store: CountingKeyStore) -> None:
    auth = Authenticator(store, None, ttl_s=2)
    store.failure = ValueError("a bug")
    with pytest.raises(ValueError):
        await auth.authenticate("Bearer sk-anything")
