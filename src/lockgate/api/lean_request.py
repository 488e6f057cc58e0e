"""The request object of the lean model routes: Starlette's, with headers looked up in a dict.

Starlette's ``Headers.get`` scans the header list and, for a header that is not there, raises
and catches a ``KeyError``: a model call asks for five headers (``content-length``,
``authorization``, ``x-lockgate-task``, ``cache-control``, the end-user header), most of them
absent. :class:`IndexedHeaders` indexes the list once. Same answers as ``Headers``: names
are case-insensitive, the first of repeated headers wins for ``get`` and ``[]``, and
``getlist``, ``raw``, ``items`` and the rest are Starlette's own.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope

__all__ = ["IndexedHeaders", "LeanRequest"]

_NAMES: dict[str, bytes] = {}
"""Header names as asked for (``"Content-Length"``) -> their lower-case bytes."""
_MAX_NAMES = 256


def _key(name: str) -> bytes:
    key = _NAMES.get(name)
    if key is None:
        key = name.lower().encode("latin-1")
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[name] = key
    return key


class IndexedHeaders(Headers):
    """Request headers whose look-ups by name go through a dict built once."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        index: dict[bytes, bytes] = {}
        for name, value in self._list:
            index.setdefault(name, value)
        self._index = index

    def get(self, key: str, default: Any = None) -> Any:
        value = self._index.get(_key(key))
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        value = self._index.get(_key(key))
        if value is None:
            raise KeyError(key)
        return value.decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and _key(key) in self._index


class LeanRequest(Request):
    """:class:`~starlette.requests.Request` with :class:`IndexedHeaders`."""

    @property
    def headers(self) -> Headers:
        headers: Headers | None = getattr(self, "_headers", None)
        if headers is None:
            headers = self._headers = IndexedHeaders(self.scope)
        return headers
