"""Limits + budget stage: the scopes a call counts against, and admission with MemoryState."""

from __future__ import annotations

import pytest

from lockgate.errors import RateLimited
from lockgate.governance import Governor
from lockgate.pipeline import Call, Controls, Principal
from lockgate.pipeline.quotas import Limits, scopes_for
from lockgate.settings import Config
from lockgate.state import MemoryState
from tests.pipeline.fakes import FakeProvider, build_pipeline, chat_call, deployment, metric, target

MODELS = [{"name": "m", "provider": "openai", "base_url": "http://x/v1", "model": "m"},
          {"name": "n", "provider": "openai", "base_url": "http://x/v1", "model": "n"}]


def config(**sections: object) -> Config:
    return Config.model_validate({"models": MODELS, **sections})


def call(principal: Principal | None, model: str = "m") -> Call:
    return chat_call(model, principal=principal)


def names(cfg: Config, c: Call) -> list[tuple[str, str, int | None]]:
    return [(s.kind, s.id, s.limits.rpm if s.limits else None) for s in scopes_for(cfg, c)]


def test_no_configuration_means_no_scopes() -> None:
    assert scopes_for(config(), call(Principal("k1", "t1", "Team"))) == []


def test_key_team_and_model_scopes_from_config() -> None:
    cfg = config(
        keys={"billing-bot": {"limits": {"rpm": 5}}},
        teams={"Team": {"limits": {"rpm": 50}, "key_limits": {"rpm": 10}}},
        model_policies={"m": {"limits": {"rpm": 500}}},
    )
    named = Principal("k1", "t1", "Team", key_name="billing-bot")
    assert names(cfg, call(named)) == [("key", "k1", 5), ("team", "t1", 50), ("model", "m", 500)]
    # another key of the team gets the team's per-key limits, counted under its own id
    other = Principal("k2", "t1", "Team")
    assert names(cfg, call(other)) == [("key", "k2", 10), ("team", "t1", 50), ("model", "m", 500)]
    # another model has no model scope
    assert names(cfg, call(other, "n")) == [("key", "k2", 10), ("team", "t1", 50)]
    # a team is also found by id
    cfg_by_id = config(teams={"t9": {"limits": {"rpm": 7}}})
    assert names(cfg_by_id, call(Principal("k", "t9", "Nine"))) == [("team", "t9", 7)]


def test_the_master_key_counts_only_against_model_policies() -> None:
    cfg = config(keys={"master": {"limits": {"rpm": 1}}},
                 model_policies={"m": {"limits": {"rpm": 3}}})
    master = Principal("master", None, is_master=True)
    assert names(cfg, call(master)) == [("model", "m", 3)]


async def test_limits_admit_until_the_limit_then_deny() -> None:
    cfg = config(keys={"k1": {"limits": {"rpm": 2}}})
    limits = Limits(cfg, Governor(MemoryState()))
    assert limits.active
    deps = [cfg.models[0]]
    p = Principal("k1", "t1")
    tickets = [await limits.admit(call(p), deps) for _ in range(2)]
    assert all(t is not None for t in tickets)
    with pytest.raises(RateLimited):
        await limits.admit(call(p), deps)
    # another key is not affected
    assert await limits.admit(call(Principal("k2", "t1")), deps) is None  # no scope at all


async def test_nothing_configured_is_inactive_and_admits_without_a_ticket() -> None:
    limits = Limits(config(), Governor(MemoryState()))
    assert not limits.active
    assert await limits.admit(call(Principal("k1", "t1")), []) is None


async def test_the_pipeline_refuses_past_the_limit_before_calling_upstream() -> None:
    cfg = config(teams={"t1": {"limits": {"rpm": 3}}})
    provider = FakeProvider()
    pipe, sink, metrics = build_pipeline(
        {"m": [target(deployment("m"), provider)]},
        controls=Controls(limits=Limits(cfg, Governor(MemoryState()))),
    )
    p = Principal("k1", "t1")
    for _ in range(3):
        await pipe.chat(call(p))
    with pytest.raises(RateLimited) as err:
        await pipe.chat(call(p))
    assert err.value.status == 429
    assert provider.calls == 3
    assert [r.status for r in sink.records] == [200, 200, 200, 429]
    assert metric(metrics, "lockgate_governance_denials_total", {"reason": "rate_limit"}) == 1
    # an ungoverned call (shadow traffic) is not counted
    await pipe.chat(chat_call("m", principal=p, governed=False))
    assert provider.calls == 4
