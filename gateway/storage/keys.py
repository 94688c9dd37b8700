"""Virtual keys and teams in SQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.context import Principal, TeamRecord
from gateway.ids import hash_secret, new_id, new_key_secret
from gateway.storage.tables import api_keys, teams
from gateway.timeutil import utcnow


class DuplicateName(Exception):
    pass


def _models(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def team_from_row(row: Mapping[str, Any]) -> TeamRecord:
    return TeamRecord(id=row["id"], name=row["name"], models=_models(row["models"]),
                      rpm=row["rpm"], tpm=row["tpm"], max_concurrent=row["max_concurrent"],
                      budget_nanos=row["budget_nanos"], budget_period=row["budget_period"],
                      policy=row["policy"])


def principal_from_row(row: Mapping[str, Any], team: TeamRecord | None) -> Principal:
    return Principal(key_id=row["id"], key_name=row["name"], role=row["role"], team=row["team"],
                     models=_models(row["models"]), rpm=row["rpm"], tpm=row["tpm"],
                     max_concurrent=row["max_concurrent"], budget_nanos=row["budget_nanos"],
                     budget_period=row["budget_period"], expires_at=row["expires_at"],
                     revoked=row["revoked_at"] is not None, team_record=team)


class KeyStore:
    """Create, read, update and revoke keys; the secret is returned once and stored hashed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        secret = new_key_secret()
        now = utcnow()
        row = {"id": new_id("key"), "key_hash": hash_secret(secret), "key_prefix": secret[:10],
               "created_at": now, "updated_at": now, "revoked_at": None, **fields}
        async with self.engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**row))
        return row, secret

    async def list(self, *, team: str | None = None) -> list[dict[str, Any]]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if team is not None:
            query = query.where(api_keys.c.team == team)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def get(self, key_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings()
            found = row.first()
        return dict(found) if found else None

    async def update(self, key_id: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        async with self.engine.begin() as conn:
            result = await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                                        .values(**fields, updated_at=utcnow()))
            if result.rowcount == 0:
                return None
        return await self.get(key_id)

    async def revoke(self, key_id: str) -> dict[str, Any] | None:
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(update(api_keys)
                               .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                               .values(revoked_at=now, updated_at=now))
        return await self.get(key_id)

    async def find_principal(self, secret_hash: str) -> Principal | None:
        """The key with this hash and its team, in one query."""
        query = (select(api_keys, teams.c.id.label("t_id"), teams.c.name.label("t_name"),
                        teams.c.models.label("t_models"), teams.c.rpm.label("t_rpm"),
                        teams.c.tpm.label("t_tpm"),
                        teams.c.max_concurrent.label("t_max_concurrent"),
                        teams.c.budget_nanos.label("t_budget_nanos"),
                        teams.c.budget_period.label("t_budget_period"),
                        teams.c.policy.label("t_policy"))
                 .select_from(api_keys.outerjoin(teams, api_keys.c.team == teams.c.name))
                 .where(api_keys.c.key_hash == secret_hash))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        team = None
        if row["t_id"] is not None:
            team = team_from_row({k[2:]: row[k] for k in row if k.startswith("t_")})
        return principal_from_row(dict(row), team)


class TeamStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        now = utcnow()
        row = {"id": new_id("team"), "created_at": now, "updated_at": now, **fields}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(teams).values(**row))
        except IntegrityError:
            raise DuplicateName(fields["name"]) from None
        return row

    async def list(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(teams).order_by(teams.c.name))
            return [dict(r) for r in rows.mappings()]

    async def get(self, name: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(teams).where(teams.c.name == name))).mappings()
            found = row.first()
        return dict(found) if found else None

    async def update(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        async with self.engine.begin() as conn:
            result = await conn.execute(update(teams).where(teams.c.name == name)
                                        .values(**fields, updated_at=utcnow()))
            if result.rowcount == 0:
                return None
        return await self.get(name)
