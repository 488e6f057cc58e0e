"""``lockgate agents list|run|show`` in a real process against a config file (SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from lockgate.testing.stub_upstream import StubUpstream
from tests.agents.conftest import agent_config, call

MESH = """
  grants: {teams: {ops: ["*"]}}
  agents:
    lead:
      model: brain
      tools: [delegate]
      delegates: [helper]
      mode: read_only
    helper:
      model: brain
      tools: [ask_human]
      mode: read_only
"""


def lockgate(*args: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.run([sys.executable, "-m", "lockgate", *args, "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_agents_cli(stub: StubUpstream, tmp_path: Path) -> None:
    brain = "agent-cli-" + uuid.uuid4().hex[:8]
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(agent_config(stub.base_url, tmp_path / "home",
                                f"sqlite:///{tmp_path / 'lg.db'}", brain, MESH))
    r = lockgate("agents", "list", cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert "lead" in r.stdout and "helper" in r.stdout
    stub.script_replies(brain, [
        {"tool_calls": [call("delegate", agent="helper", task="check the valves")]},
        {"content": "valves fine"},
        {"content": "all good"}])
    r = lockgate("agents", "run", "lead", "check everything", "--json", cfg=cfg)
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert doc["status"] == "succeeded" and doc["output"] == "all good"
    r = lockgate("agents", "show", doc["id"], cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert "helper" in r.stdout and "check the valves" in r.stdout and "all good" in r.stdout
    r = lockgate("agents", "list", "--runs", cfg=cfg)
    assert doc["id"] in r.stdout
    r = lockgate("agents", "run", "nope", "x", cfg=cfg)
    assert r.returncode != 0 and "No agent 'nope'" in r.stderr
    assert "Traceback" not in r.stderr
    r = lockgate("agents", "show", "run_missing", cfg=cfg)
    assert r.returncode != 0 and "No agent run" in r.stderr


def test_agents_tools_and_grants_cli(stub: StubUpstream, tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(agent_config(stub.base_url, tmp_path / "home",
                                f"sqlite:///{tmp_path / 'lg.db'}", "unused", MESH))
    spec = Path(__file__).parents[2] / "examples/plant_twin/openapi.json"
    (tmp_path / "twin.yaml").write_text(f"spec: {spec}\nbase_url: http://127.0.0.1:9\n")
    r = lockgate("agents", "tools", "set", "openapi", "twin", f"@{tmp_path / 'twin.yaml'}",
                 "--as", "alice", cfg=cfg)
    assert r.returncode == 0, r.stderr
    assert "twin__setSetpoint" in r.stdout
    r = lockgate("agents", "tools", "list", cfg=cfg)
    assert r.returncode == 0 and r.stdout.split()[:3] == ["openapi", "twin", "api"], r.stdout
    assert "twin__getPump" in r.stdout
    r = lockgate("agents", "grants", "set", "teams", "field", "twin__get*", cfg=cfg)
    assert r.returncode == 0, r.stderr
    r = lockgate("agents", "grants", "list", "--json", cfg=cfg)
    import json

    grants = json.loads(r.stdout)
    assert {"part": "teams", "subject": "field", "tools": ["twin__get*"], "source": "api",
            "object": "agent.grant"} in grants
    assert {"part": "teams", "subject": "ops", "tools": ["*"], "source": "config",
            "object": "agent.grant"} in grants
    # bad input: one line, non-zero exit, no traceback
    for args in (["tools", "set", "ftp", "x", "{}"], ["tools", "set", "openapi", "x", "{"],
                 ["grants", "set", "teams", "ops", "x"], ["grants", "delete", "keys", "nobody"],
                 ["tools", "set", "openapi", "y", "@/nonexistent.yaml"]):
        r = lockgate("agents", *args, cfg=cfg)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    r = lockgate("agents", "grants", "delete", "teams", "field", cfg=cfg)
    assert r.returncode == 0, r.stderr
    r = lockgate("agents", "tools", "delete", "openapi", "twin", cfg=cfg)
    assert r.returncode == 0, r.stderr
    r = lockgate("agents", "tools", "list", cfg=cfg)
    assert "twin" not in r.stdout
