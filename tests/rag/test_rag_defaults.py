"""The embedded default ships the offline embeddings model as ``embed`` and RAG uses it."""

from __future__ import annotations

import importlib.util

import pytest

from lockgate.runtime import dense_options, rag_settings
from lockgate.settings.loading import EMBED_PACKAGE, default_config


@pytest.mark.skipif(importlib.util.find_spec(EMBED_PACKAGE) is None,
                    reason="the offline embeddings wheel is not installed")
def test_default_config_has_offline_embed_model_used_by_rag() -> None:
    cfg = default_config()
    embed = [m for m in cfg.models if m.name == "embed"]
    assert len(embed) == 1
    assert embed[0].provider == "embedded" and embed[0].mode == "embeddings"
    assert embed[0].path == "bundled:all-minilm-l6-v2"
    assert cfg.model_names()[0] == "local"  # chat stays the first (what `up` shows)
    assert rag_settings(cfg).embed_model == "embed"
    # dense graphs are saved under the home, one folder per database
    opts = dense_options(cfg)
    assert opts.index_dir is not None and opts.index_dir.parent == cfg.home_path / "rag-index"


def test_default_config_without_the_wheel_has_no_embed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == EMBED_PACKAGE else real(name, *a))
    cfg = default_config()
    assert [m.name for m in cfg.models] == ["local"]
    assert rag_settings(cfg).embed_model is None
