"""Helpers for governance tests: a settable clock; the Redis under test comes from
:mod:`tests.support.state_backends`."""

from __future__ import annotations

from tests.support.state_backends import REDIS_URL

__all__ = ["REDIS_URL", "Clock"]


class Clock:
    """A settable clock for governance objects."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
