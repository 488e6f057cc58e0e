"""The example in docs/facade.md is a valid lockgate.yaml and builds (tasks exist)."""

from __future__ import annotations

import re
from pathlib import Path

from lockgate.facade import Facades
from lockgate.runtime import Runtime
from lockgate.settings import parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "facade.md"


async def test_docs_example_config_builds(tmp_path: Path) -> None:
    text = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S).group(1)  # type: ignore[union-attr]
    text = text.replace("{name: local, provider: llamacpp}",
                        "{name: local, provider: openai, base_url: 'http://127.0.0.1:9/v1', "
                        "model: m}")
    cfg = parse_config(f"home: {tmp_path}\n" + text)
    assert [r.name for r in cfg.facades[0].rules][:2] == ["ticket-summary", "urgency-header"]
    rt = await Runtime.start(cfg, warm_up=False, jobs=False)
    try:
        facades = Facades.build(cfg.facades, rt)  # every rule's task exists
        assert len(facades.proxies[0].rules) == 8
        await facades.aclose()
    finally:
        await rt.aclose()
