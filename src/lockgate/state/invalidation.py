"""Cross-instance cache invalidation: pub/sub for speed, a version counter for certainty.

A gateway that revokes a key calls :meth:`Invalidations.announce`: it bumps the
version counter ``name`` and publishes the message on channel ``name``. Every
gateway runs :meth:`Invalidations.start`, which listens on the channel and calls
``on_message`` (e.g. drop one key from the auth cache) as messages arrive.

Pub/sub can lose messages (a dropped connection). So each gateway also checks
the version counter, at no extra cost, in the admission round-trip
(``GovernanceConfig.version_key``; :attr:`lockgate.governance.Ticket.version`)
and passes it to :meth:`Invalidations.observe_version`: a version it has not
seen calls ``on_reset`` (drop the whole cache) and returns True, telling the
caller to re-authenticate the current request. A lost subscription also
calls ``on_reset`` before listening again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from lockgate.state.base import StateBackend, StateUnavailable

__all__ = ["Invalidations"]


class Invalidations:
    """One invalidation channel (e.g. ``keys``) shared by every gateway."""

    def __init__(
        self,
        state: StateBackend,
        name: str = "keys",
        *,
        on_message: Callable[[str], None],
        on_reset: Callable[[], None],
        retry_seconds: float = 1.0,
    ) -> None:
        self.state = state
        self.name = name
        self._on_message = on_message
        self._on_reset = on_reset
        self._retry = retry_seconds
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.received = 0
        self.resets = 0
        self.subscription_errors = 0

    async def announce(self, message: str) -> int:
        """Tell every gateway (this one included); returns the new version."""
        version = await self.state.bump_version(self.name)
        await self.state.publish(self.name, message)
        return version

    def observe_version(self, version: int | None) -> bool:
        """Feed the version read during admission; True when it moved (cache was reset)."""
        if version is None or version == self._version:
            return False
        first = self._version is None
        self._version = version
        if first:
            return False
        self._reset()
        return True

    def _reset(self) -> None:
        self.resets += 1
        self._on_reset()

    async def start(self) -> None:
        """Start listening in the background; returns once subscribed (or after one failure)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 5.0)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self) -> None:
        while True:
            try:
                sub = await self.state.subscribe(self.name)
            except StateUnavailable:
                self.subscription_errors += 1
                self._subscribed.set()
                await asyncio.sleep(self._retry)
                continue
            self._subscribed.set()
            try:
                async for message in sub:
                    self.received += 1
                    self._on_message(message)
            except StateUnavailable:
                self.subscription_errors += 1
                self._reset()  # messages may have been missed
                await asyncio.sleep(self._retry)
            finally:
                await sub.close()
