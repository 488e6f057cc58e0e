"""Weighted routing, tested statistically: the first choice follows the weights.

Pearson's chi-square goodness of fit over many draws with fixed seeds (so the outcome is
reproducible), compared with the 99.9% quantile of the chi-square distribution; the same
samples checked against slightly wrong weights must be rejected, so the test has power.
A small canary share is checked with binomial bounds. The end-to-end version through a
real gateway is tests/gateway/test_gateway_weights.py.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping

import pytest

from lockgate.pipeline.routing import Router
from tests.pipeline.fakes import deployment, target

CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266}
"""Chi-square quantiles at 0.999 by degrees of freedom."""


def chi_square(observed: Mapping[str, int], weights: Mapping[str, float]) -> float:
    n = sum(observed.values())
    total = sum(weights.values())
    return sum((observed.get(k, 0) - n * w / total) ** 2 / (n * w / total)
               for k, w in weights.items() if w > 0)


def router(weights: Mapping[str, float], seed: int) -> Router:
    group = [target(deployment("chat", k, weight=w, dep_id=k)) for k, w in weights.items()]
    return Router({"chat": group}, rng=random.Random(seed))


def firsts(r: Router, n: int) -> Counter[str]:
    return Counter(r.plan("chat")[0].id for _ in range(n))


@pytest.mark.parametrize("weights", [
    {"a": 7, "b": 2, "c": 1},
    {"a": 1, "b": 1},
    {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05},
])
@pytest.mark.parametrize("seed", range(5))
def test_first_choice_fits_the_weights(weights: dict[str, float], seed: int) -> None:
    seen = firsts(router(weights, seed), 20_000)
    df = len(weights) - 1
    assert chi_square(seen, weights) < CHI2_999[df], (seen, weights)


def test_the_test_rejects_wrong_weights() -> None:
    seen = firsts(router({"a": 7, "b": 2, "c": 1}, 1), 20_000)
    assert chi_square(seen, {"a": 7, "b": 2, "c": 1}) < CHI2_999[2]
    for wrong in ({"a": 6.6, "b": 2.2, "c": 1.2}, {"a": 1, "b": 1, "c": 1},
                  {"a": 7, "b": 1, "c": 2}):
        assert chi_square(seen, wrong) > CHI2_999[2], wrong


def test_a_five_percent_canary_gets_five_percent() -> None:
    n, p = 40_000, 0.05
    seen = firsts(router({"stable": 0.95, "canary": 0.05}, 11), n)
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(seen["canary"] - mean) < 4.5 * sd, seen


def test_zero_weight_is_never_first_and_disabled_ones_renormalise() -> None:
    r = router({"a": 3, "b": 1, "z": 0}, 5)
    seen = firsts(r, 20_000)
    assert seen["z"] == 0
    assert chi_square(seen, {"a": 3, "b": 1}) < CHI2_999[1]
    r.disable({"a"})
    seen = firsts(r, 5_000)
    assert set(seen) == {"b"}  # z has weight 0: b always first while a is out
    r.disable(())
    assert chi_square(firsts(r, 20_000), {"a": 3, "b": 1}) < CHI2_999[1]


def test_every_deployment_is_in_the_plan_once() -> None:
    r = router({"a": 7, "b": 2, "c": 1}, 3)
    for _ in range(1000):
        plan = [t.id for t in r.plan("chat")]
        assert sorted(plan) == ["a", "b", "c"]
