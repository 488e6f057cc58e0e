"""Route stage: weighted first choice, fallbacks in config order, pinned, virtual families."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from lockgate.pipeline import Call, Completion, Principal, StreamChunk
from lockgate.pipeline.routing import Router
from tests.pipeline.fakes import deployment, target


class Family:
    """A minimal virtual deployment (only what the router looks at)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def grantable(self, model: str) -> bool:
        return model.startswith(self.prefix)

    def known(self, model: str) -> bool:
        return False

    def deployment_id(self, model: str) -> str:
        return "virtual:" + model

    async def models(self, principal: Principal) -> list[str]:
        return []

    async def chat(self, call: Call) -> Completion:
        raise NotImplementedError

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError


def three_way(rng: random.Random) -> Router:
    group = [target(deployment("chat", "a", weight=7, dep_id="a")),
             target(deployment("chat", "b", weight=2, dep_id="b")),
             target(deployment("chat", "c", weight=1, dep_id="c"))]
    return Router({"chat": group, "solo": [target(deployment("solo", dep_id="s"))]}, rng=rng)


def test_weights_are_honoured_for_the_first_choice() -> None:
    router = three_way(random.Random(1234))
    n = 5000
    firsts = Counter(router.plan("chat")[0].id for _ in range(n))
    assert abs(firsts["a"] / n - 0.7) < 0.03
    assert abs(firsts["b"] / n - 0.2) < 0.03
    assert abs(firsts["c"] / n - 0.1) < 0.03


def test_the_others_follow_in_config_order_as_fallbacks() -> None:
    router = three_way(random.Random(7))
    seen: dict[str, list[str]] = {}
    for _ in range(500):
        plan = [t.id for t in router.plan("chat")]
        assert sorted(plan) == ["a", "b", "c"]  # every deployment, once
        seen[plan[0]] = plan
    assert seen == {"a": ["a", "b", "c"], "b": ["b", "a", "c"], "c": ["c", "a", "b"]}


def test_zero_weight_is_never_first_but_still_a_fallback() -> None:
    group = [target(deployment("m", "main", weight=1, dep_id="main")),
             target(deployment("m", "backup", weight=0, dep_id="backup"))]
    router = Router({"m": group}, rng=random.Random(3))
    plans = {tuple(t.id for t in router.plan("m")) for _ in range(200)}
    assert plans == {("main", "backup")}


def test_unknown_model_has_an_empty_plan() -> None:
    router = three_way(random.Random(0))
    assert router.plan("nope") == []
    assert [t.id for t in router.plan("solo")] == ["s"]


def test_pinned_gives_exactly_that_deployment_without_fallback() -> None:
    router = three_way(random.Random(0))
    assert [t.id for t in router.pinned("c")] == ["c"]
    assert [t.id for t in router.pinned("s")] == ["s"]
    assert router.pinned("missing") == []


def test_virtual_families_are_found_by_prefix() -> None:
    router = three_way(random.Random(0))
    assert router.virtual("rag/handbook") is None  # nothing registered yet
    rag = Family("rag/")
    router.add_virtual(rag)
    assert router.virtual("rag/handbook") is rag
    assert router.virtual("rag/") is rag
    assert router.virtual("ragx/handbook") is None
    assert router.virtual("rag") is None  # no separator: not in the family
    assert router.virtual("chat") is None
    assert router.virtual_families == [rag]
    assert router.models() == ["chat", "solo"]  # families are not configured models


def test_a_configured_model_wins_over_a_family() -> None:
    group = [target(deployment("tools/search", dep_id="t"))]
    router = Router({"tools/search": group})
    router.add_virtual(Family("kb/"))
    assert router.virtual("tools/search") is None


def test_a_prefix_clashing_with_configured_models_is_refused() -> None:
    router = Router({"rag/legacy": [target(deployment("rag/legacy", dep_id="l"))]})
    with pytest.raises(ValueError, match="prefix"):
        router.add_virtual(Family("rag/"))
    assert router.virtual("rag/other") is None
    router.add_virtual(Family("kb/"))  # another prefix is fine
