"""Policy stage: the kill switch blocks models and teams; a fallback model answers instead."""

from __future__ import annotations

import pytest

from lockgate.errors import Unavailable
from lockgate.pipeline import Controls, Principal
from lockgate.pipeline.kill_switch import KillSwitch
from lockgate.state import MemoryState
from tests.pipeline.fakes import FakeProvider, build_pipeline, chat_call, deployment, metric, target


def test_blocked_reports_model_first_then_team_by_id_or_name() -> None:
    ks = KillSwitch(MemoryState(), models=["gpt"], teams=["team-x", "Ops"])
    assert ks.active
    assert ks.blocked("gpt", "team-x", None) == "model"
    assert ks.blocked("other", "team-x", None) == "team"
    assert ks.blocked("other", "t-1", "Ops") == "team"
    assert ks.blocked("other", "t-1", "Dev") is None
    assert ks.blocked("other", None, None) is None
    assert not KillSwitch(MemoryState()).active


async def test_set_is_stored_and_loaded_by_another_instance() -> None:
    state = MemoryState()
    ks = KillSwitch(state)
    assert await ks.set("model", "gpt", True) == {"models": ["gpt"], "teams": []}
    other = KillSwitch(state, models=["ignored-start-value"])
    await other.load()
    assert other.blocked("gpt", None, None) == "model"
    assert other.blocked("ignored-start-value", None, None) is None
    await ks.set("model", "gpt", False)
    await other.load()
    assert not other.active


def setup(ks: KillSwitch, fallbacks: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    main, spare = FakeProvider("from main"), FakeProvider("from fallback")
    pipe, sink, metrics = build_pipeline(
        {"main": [target(deployment("main", dep_id="main-dep"), main)],
         "spare": [target(deployment("spare", dep_id="spare-dep"), spare)]},
        controls=Controls(kill_switch=ks, fallbacks=fallbacks or {}),
    )
    return pipe, sink, metrics, main, spare


P = Principal(key_id="k", team_id="team-1", team_name="Support")


async def test_a_blocked_model_without_fallback_is_refused_with_503() -> None:
    pipe, sink, metrics, main, _ = setup(KillSwitch(MemoryState(), models=["main"]))
    with pytest.raises(Unavailable) as err:
        await pipe.chat(chat_call("main", principal=P))
    assert err.value.status == 503 and err.value.error_class == "model_disabled"
    assert main.calls == 0
    assert sink.records[0].status == 503 and sink.records[0].error_class == "model_disabled"
    assert metric(metrics, "lockgate_kill_switch_hits_total", {"switch": "model"}) == 1


async def test_a_blocked_team_is_refused_but_other_teams_pass() -> None:
    pipe, _, _, main, _ = setup(KillSwitch(MemoryState(), teams=["Support"]))
    with pytest.raises(Unavailable) as err:
        await pipe.chat(chat_call("main", principal=P))
    assert err.value.error_class == "team_disabled"
    ok = await pipe.chat(chat_call("main", principal=Principal(key_id="k2", team_id="t2")))
    assert ok.body["choices"][0]["message"]["content"] == "from main"
    assert main.calls == 1


async def test_a_blocked_model_is_answered_by_its_fallback_model() -> None:
    pipe, sink, _, main, spare = setup(KillSwitch(MemoryState(), models=["main"]),
                                       {"main": "spare"})
    result = await pipe.chat(chat_call("main", principal=P))
    assert result.body["choices"][0]["message"]["content"] == "from fallback"
    assert (main.calls, spare.calls) == (0, 1)
    assert sink.records[0].status == 200 and sink.records[0].deployment == "spare-dep"


async def test_a_switched_off_fallback_is_no_way_out() -> None:
    pipe, _, _, _, spare = setup(KillSwitch(MemoryState(), models=["main", "spare"]),
                                 {"main": "spare"})
    with pytest.raises(Unavailable):
        await pipe.chat(chat_call("main", principal=P))
    assert spare.calls == 0


async def test_switching_off_at_run_time_takes_effect_on_the_next_call() -> None:
    ks = KillSwitch(MemoryState())
    pipe, _, _, main, _ = setup(ks)
    await pipe.chat(chat_call("main", principal=P))
    await ks.set("model", "main", True)
    with pytest.raises(Unavailable):
        await pipe.chat(chat_call("main", principal=P))
    assert main.calls == 1
