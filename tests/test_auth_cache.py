"""The key cache against a real SQLite file: a burst of requests on one key makes one lookup,
and a revocation during a lookup is not undone by that lookup's answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import Unauthorized
from gateway.keys.authenticator import Authenticator
from gateway.migrate import upgrade
from gateway.storage.engine import create_engine
from gateway.storage.keys import KeyStore


class CountingKeyStore(KeyStore):
    """The real store, counting lookups; `gate` (when set) holds each answer until released."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.lookups = 0
        self.gate: asyncio.Event | None = None

    async def find_principal(self, secret_hash: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
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
