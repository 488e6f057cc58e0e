"""Backends for governance tests: every test runs on MemoryState and on the real Redis."""

from tests.support.state_backends import backend, redis_prefix

__all__ = ["backend", "redis_prefix"]
