"""Page-Hinkley (lockgate.feedback.detectors): exact arithmetic, no alarm on stable
streams, one alarm soon after a shift. Seeded, so every run sees the same streams."""

from __future__ import annotations

import random

import pytest

from lockgate.feedback import PageHinkley

SHIFT_AT = 1000
MAX_DELAY = 150
"""Documented in docs/feedback.md: a 5 % -> 40 % override rate is detected within 150
events after the shift with the default settings (measured: median ~31, max ~102 over
300 seeds)."""


def bernoulli(seed: int, rates: list[tuple[float, int]]) -> list[float]:
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for p, n in rates for _ in range(n)]


def alarms(values: list[float], det: PageHinkley | None = None) -> list[int]:
    det = det or PageHinkley()
    return [i for i, x in enumerate(values) if det.update(x)]


def test_arithmetic_by_hand() -> None:
    det = PageHinkley(min_events=4, delta=0.5, threshold=2.0, min_std=0.1)
    for x in (1.0, 3.0, 1.0, 3.0):  # baseline: mean 2, sd sqrt(4/3)
        assert not det.update(x)
    assert det.warm and det.mean == 2.0
    assert det.std == pytest.approx((4 / 3) ** 0.5)
    assert not det.update(2.0)  # z = 0 - 0.5
    assert det.statistic == 0.0 and det.cum == pytest.approx(-0.5)
    assert not det.update(4.0)  # z = 2/1.1547 - 0.5 = 1.232 -> m - M = 1.232
    assert det.statistic == pytest.approx(2 / (4 / 3) ** 0.5 - 0.5)
    assert det.update(4.0)  # 2.464 > 2: alarm, then a fresh start
    assert det.alarms == 1 and not det.warm and det.seen == 0


def test_floors_and_non_finite_values() -> None:
    det = PageHinkley(min_events=3, min_std=0.2)
    for _ in range(3):
        det.update(0.0)
    assert det.std == 0.2  # a 0 % baseline still has a scale
    rel = PageHinkley(min_events=3, min_std=1e-9, min_rel_std=0.05)
    for _ in range(3):
        rel.update(200.0)
    assert rel.std == pytest.approx(10.0)
    assert not rel.update(float("nan")) and rel.seen == 3


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.3])
def test_stable_streams_raise_nothing_over_10000_events(rate: float) -> None:
    for seed in range(10):
        assert alarms(bernoulli(seed, [(rate, 10_000)])) == [], (rate, seed)


def test_override_rate_shift_5_to_40_percent_alarms_once_within_documented_events() -> None:
    delays = []
    for seed in range(40):
        found = alarms(bernoulli(seed, [(0.05, SHIFT_AT), (0.40, 2000)]))
        assert len(found) == 1, (seed, found)
        delay = found[0] - SHIFT_AT
        assert 0 <= delay <= MAX_DELAY, (seed, delay)
        delays.append(delay)
    assert sorted(delays)[len(delays) // 2] < 60  # median well inside the bound


def test_decreases_are_not_degradations() -> None:
    assert alarms(bernoulli(7, [(0.4, 1000), (0.05, 3000)])) == []


def test_latency_windows_shift_detected_with_relative_floor() -> None:
    rng = random.Random(3)
    det = PageHinkley(min_events=30, min_std=1e-9, min_rel_std=0.05)
    stable = [rng.gauss(800, 40) for _ in range(400)]
    slow = [rng.gauss(1400, 60) for _ in range(100)]
    found = alarms(stable + slow, det)
    assert len(found) == 1 and 400 <= found[0] <= 410
