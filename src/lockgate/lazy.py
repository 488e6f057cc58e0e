"""A module imported on first use: ``np = lazy_module("numpy")``.

A gateway that serves chat calls never touches NumPy (RAG vectors, process mining and the
embedded embeddings model do), yet importing the modules that use it loaded it at start:
~16 MB resident per worker (issue 12, RSS). Those modules write::

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = lazy_module("numpy")

Type checkers see the real module; at run time the first attribute read (``np.asarray``)
imports it and copies its namespace in, so later reads are plain module lookups.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # probes (copy, pickle, inspect)
            raise AttributeError(name)
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` that imports it on the first attribute read."""
    return _LazyModule(name)
