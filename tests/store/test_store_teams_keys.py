"""Teams and virtual keys: lifecycle, lookups by hash, revoke, clear errors."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest
import sqlalchemy as sa

from lockgate.store import (
    AlreadyExists,
    InvalidInput,
    NotFoundError,
    Store,
    hash_key,
)
from lockgate.store.tables import api_keys


async def test_team_lifecycle(store: Store) -> None:
    team = await store.create_team("search", business_unit="growth")
    assert team.id.startswith("team_") and len(team.id) > 5
    assert team.name == "search" and team.business_unit == "growth"
    assert team.settings == {}
    assert team.created_at.tzinfo is not None
    other = await store.create_team("  billing  ")
    assert other.name == "billing" and other.business_unit is None

    assert await store.get_team(team.id) == team
    assert await store.get_team("search") == team
    assert await store.get_team("nope") is None
    assert [t.name for t in await store.list_teams()] == ["billing", "search"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        team.name = "x"  # type: ignore[misc]

    updated = await store.update_team("search", settings={"budget": {"monthly_usd": 100}})
    assert updated.settings == {"budget": {"monthly_usd": 100}}
    assert updated.business_unit == "growth"
    cleared = await store.update_team(team.id, business_unit=None)
    assert cleared.business_unit is None and cleared.settings == updated.settings
    assert (await store.get_team("search")) == cleared
    with pytest.raises(NotFoundError):
        await store.update_team("nope", business_unit="x")


async def test_duplicate_team_name_is_a_clear_error(store: Store) -> None:
    await store.create_team("search")
    with pytest.raises(AlreadyExists) as info:
        await store.create_team("search")
    assert str(info.value) == "team 'search' already exists"
    assert info.value.http_status == 409
    assert len(await store.list_teams()) == 1


async def test_concurrent_duplicate_team_creation_creates_one(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create_team("race") for _ in range(5)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x" * 201])
async def test_bad_team_names_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(InvalidInput):
        await store.create_team(bad)


async def test_key_lifecycle(store: Store) -> None:
    team = await store.create_team("search")
    plaintext, key = await store.create_key("search", "ci", allowed_models=["local", "gpt"])
    assert plaintext.startswith("lg-") and len(plaintext) == 3 + 43
    assert key.id.startswith("key_") and len(key.id) == 4 + 12
    assert key.key_prefix == plaintext[:10]
    assert key.team_id == team.id and key.team_name == "search"
    assert key.allowed_models == ("local", "gpt")
    assert key.revoked_at is None and not key.revoked

    # only the sha256 is stored, never the plaintext
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(api_keys))).mappings().one()
    assert stored["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert hash_key(plaintext) == stored["key_hash"]
    assert plaintext not in {str(v) for v in stored.values()}

    found = await store.find_key(plaintext)
    assert found == key
    assert await store.find_key(plaintext + "x") is None
    assert await store.find_key("") is None
    assert await store.get_key(key.id) == key

    _, open_key = await store.create_key(team.id)
    assert open_key.allowed_models is None and open_key.name == ""
    assert [k.id for k in await store.list_keys("search")] == [key.id, open_key.id]

    assert await store.revoke_key(key.id) is True
    assert await store.revoke_key(key.id) is False
    assert await store.revoke_key("key_unknown") is False
    revoked = await store.find_key(plaintext)
    assert revoked is not None and revoked.revoked and revoked.revoked_at is not None
    assert [k.id for k in await store.list_keys(include_revoked=False)] == [open_key.id]
    assert {k.id for k in await store.list_keys()} == {key.id, open_key.id}


async def test_keys_are_listed_per_team(store: Store) -> None:
    await store.create_team("a")
    await store.create_team("b")
    _, ka = await store.create_key("a", "one")
    _, kb = await store.create_key("b", "two")
    assert [k.id for k in await store.list_keys("a")] == [ka.id]
    assert [k.id for k in await store.list_keys("b")] == [kb.id]
    assert {k.team_name for k in await store.list_keys()} == {"a", "b"}
    with pytest.raises(NotFoundError):
        await store.list_keys("c")


async def test_key_for_unknown_team_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        await store.create_key("ghost", "x")
    assert str(info.value) == "unknown team 'ghost'"
    assert info.value.http_status == 404
    assert await store.list_keys() == []


async def test_allowed_models_must_be_a_list(store: Store) -> None:
    await store.create_team("t")
    with pytest.raises(InvalidInput):
        await store.create_key("t", "x", allowed_models="local")
    with pytest.raises(InvalidInput):
        await store.create_key("t", "x", allowed_models=["ok", ""])
    _, key = await store.create_key("t", "x", allowed_models=["a", "a", "b"])
    assert key.allowed_models == ("a", "b")
    _, none_allowed = await store.create_key("t", "y", allowed_models=[])
    assert none_allowed.allowed_models == ()
    assert (await store.get_key(none_allowed.id)) == none_allowed


async def test_touch_keys_sets_last_used(store: Store) -> None:
    await store.create_team("t")
    _, a = await store.create_key("t")
    _, b = await store.create_key("t")
    assert await store.touch_keys([a.id, a.id]) == 1
    got_a, got_b = await store.get_key(a.id), await store.get_key(b.id)
    assert got_a is not None and got_a.last_used_at is not None
    assert got_b is not None and got_b.last_used_at is None
    more = [(await store.create_key("t"))[1].id for _ in range(5)]
    assert await store.touch_keys([b.id, *more]) == 6  # 6 ids padded to 8
    for key_id in more:
        got = await store.get_key(key_id)
        assert got is not None and got.last_used_at is not None


async def test_in_memory_sqlite_works() -> None:
    store = await Store.open("sqlite://")
    try:
        await store.create_team("m")
        plaintext, key = await store.create_key("m")
        assert await store.find_key(plaintext) == key
        assert store.backend == "sqlite"
        assert await store.ping()
    finally:
        await store.close()
