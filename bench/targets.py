"""The things the bench measures, each started fresh and checked before it is loaded:

* the stand-in upstream (``bench/upstream.py``, or the project's
  ``lockgate.testing.stub_upstream`` with ``--upstream stub``); the ``direct`` target
  is the upstream itself;
* lockgate: ``lockgate serve --config ... --workers N`` with a fresh SQLite store in a
  temp ``LOCKGATE_HOME``, audit logging on (the default), a team and a virtual key
  created with the CLI (falling back to the master key, noted, if the CLI fails);
* LiteLLM's proxy: ``litellm --config ... --num_workers N`` from its own venv
  (created on first use), no database, debug off, ``LITELLM_LOCAL_MODEL_COST_MAP=True``,
  authenticated with its master key (the only auth it has without a database).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.procs import ProcessGroup, Started, free_port, http_request, wait_until

__all__ = [
    "BENCH_BODY",
    "LITELLM_VERSION",
    "MASTER_KEY",
    "Target",
    "drop_redis_prefix",
    "ensure_litellm_venv",
    "lockgate_command",
    "start_litellm",
    "start_lockgate",
    "start_upstream",
]

REPO = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.106.2"
MASTER_KEY = "lg-bench-master-key-0123456789"
LITELLM_MASTER_KEY = "sk-litellm-bench-master"
BENCH_BODY = orjson.dumps({
    "model": "bench",
    "messages": [{"role": "user", "content": "Say ok."}],
    "max_tokens": 8,
})
CHAT_PATH = "/v1/chat/completions"
# Variables that would point a gateway at shared state instead of its own temp store.
_STRIP_ENV = ("LOCKGATE_DATABASE_URL", "LOCKGATE_REDIS_URL", "LOCKGATE_CONFIG", "DATABASE_URL",
              "REDIS_URL", "REDIS_HOST")


@dataclass
class Target:
    """A running thing to load. ``server`` is None only for nothing-to-own cases."""

    name: str
    kind: str  # "direct" | "lockgate" | "litellm"
    workers: int
    url: str
    headers: dict[str, str]
    server: Started | None
    overhead_header: str | None = None
    notes: list[str] = field(default_factory=list)
    gc_dir: Path | None = None
    """Where bench/gcprobe.py writes GC totals for this target (``--gc-probe``)."""
    mem_dir: Path | None = None
    """Where bench/memprobe.py writes memory samples for this target (``--mem-probe``)."""
    varying_body: bool = False
    """Every request a new body (a cache miss each time): the controls-on target."""
    metrics_url: str | None = None
    """lockgate: ``/metrics`` (with :data:`MASTER_KEY`), read for the audit backlog."""


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    env.update(extra)
    return env


def _answers_chat(url: str, headers: Mapping[str, str]) -> bool:
    reply = http_request(url, BENCH_BODY, headers, timeout=5.0)
    if reply.status != 200:
        return False
    data = orjson.loads(reply.body)
    return bool(data.get("choices"))


def _check_chat(target: Target) -> None:
    reply = http_request(target.url, BENCH_BODY, target.headers, timeout=10.0)
    if reply.status != 200:
        raise RuntimeError(f"{target.name}: POST {target.url} -> {reply.status}: "
                           f"{reply.body[:500]!r}")
    data = orjson.loads(reply.body)
    if not data.get("choices") or not data.get("usage"):
        raise RuntimeError(f"{target.name}: unexpected body {reply.body[:500]!r}")


def start_upstream(group: ProcessGroup, workdir: Path, kind: str = "bench") -> Target:
    """Start the stand-in upstream; returns the ``direct`` target."""
    port = free_port()
    if kind == "bench":
        argv = [sys.executable, str(REPO / "bench" / "upstream.py"), "--port", str(port)]
    elif kind == "stub":
        argv = [sys.executable, "-m", "lockgate.testing.stub_upstream", "--port", str(port)]
    else:
        raise ValueError(f"unknown upstream kind {kind!r}")
    env = _clean_env({})
    _add_src_path(env)
    server = group.start("upstream", argv, workdir / "upstream.log", env=env)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    url = f"http://127.0.0.1:{port}{CHAT_PATH}"
    wait_until(lambda: _answers_chat(url, headers), 30, server, "upstream")
    target = Target("direct", "direct", 1, url, headers, server)
    _check_chat(target)
    return target


def _lockgate_config(path: Path, upstream_url: str) -> Path:
    base = upstream_url.removesuffix(CHAT_PATH) + "/v1"
    path.write_text(
        "models:\n"
        "  - name: bench\n"
        "    provider: openai\n"
        f"    base_url: {base}\n"
        "    model: bench-model\n"
        "    api_key: sk-bench\n"
    )
    return path


def start_lockgate(
    group: ProcessGroup,
    workdir: Path,
    upstream_url: str,
    workers: int,
    lockgate_cmd: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    tag: str = "",
    gc_probe: bool = False,
    mem_probe: bool = False,
    src: Path | None = None,
    config_extra: str = "",
    name: str | None = None,
) -> Target:
    """Start ``lockgate serve`` with a fresh home; create a team and a virtual key.

    With ``gc_probe`` the server runs under ``bench/gcprobe.py`` (same CLI) and reports
    its garbage collections; with ``mem_probe`` under ``bench/memprobe.py``, which samples
    malloc and Python memory (not both at once).

    ``lockgate_cmd`` is how to run the CLI (see :func:`lockgate_command`). With ``src`` the
    CLI runs from that source tree instead (``PYTHONPATH=src``: e.g. the main branch's, for
    a before/after comparison in one run). ``config_extra`` is appended to the config.
    """
    stem = f"lockgate-w{workers}{tag}"
    home = workdir / f"{stem}-home"
    home.mkdir(parents=True, exist_ok=True)
    config = _lockgate_config(workdir / f"{stem}.yaml", upstream_url)
    if config_extra:
        config.write_text(config.read_text() + config_extra)
    env = _clean_env({"LOCKGATE_MASTER_KEY": MASTER_KEY, "LOCKGATE_HOME": str(home),
                      **(extra_env or {})})
    if src is not None:
        lockgate_cmd = lockgate_command(Path("/nonexistent"))
        env["PYTHONPATH"] = str(src)
    elif lockgate_cmd[0] == sys.executable:  # not installed: run from the source tree
        _add_src_path(env)
    notes: list[str] = []
    key = _create_virtual_key(lockgate_cmd, config, env, notes)
    port = free_port()
    if gc_probe and mem_probe:
        raise ValueError("gc_probe and mem_probe cannot be combined")
    serve_cmd = list(lockgate_cmd)
    gc_dir = workdir / f"{stem}-gc" if gc_probe else None
    mem_dir = workdir / f"{stem}-mem" if mem_probe else None
    for out_dir, var, script in ((gc_dir, "LOCKGATE_BENCH_GC_DIR", "gcprobe.py"),
                                 (mem_dir, "LOCKGATE_BENCH_MEM_DIR", "memprobe.py")):
        if out_dir is not None:  # the CLI under a probe script that imports it from src/
            env[var] = str(out_dir)
            if src is None:
                _add_src_path(env)
            serve_cmd = [sys.executable, str(REPO / "bench" / script)]
    argv = [*serve_cmd, "serve", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    server = group.start(stem, argv, workdir / f"{stem}.log", env=env)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    url = f"http://127.0.0.1:{port}{CHAT_PATH}"
    wait_until(lambda: _answers_chat(url, headers), 90, server, f"lockgate ({workers} workers)")
    target = Target(name or f"lockgate w={workers}", "lockgate", workers, url, headers, server,
                    overhead_header="x-lockgate-overhead-ms", notes=notes, gc_dir=gc_dir,
                    mem_dir=mem_dir, metrics_url=f"http://127.0.0.1:{port}/metrics")
    _check_chat(target)
    return target


def audit_pending(target: Target) -> int | None:
    """``lockgate_audit_pending`` from the target's ``/metrics`` (None if not readable)."""
    if target.metrics_url is None:
        return None
    try:
        reply = http_request(target.metrics_url,
                             headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    except OSError:
        return None
    if reply.status != 200:
        return None
    total, seen = 0.0, False
    for line in reply.body.decode("utf-8", "replace").splitlines():
        if line.startswith("lockgate_audit_pending"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return int(total) if seen else None


def wait_audit_drained(target: Target, limit_s: float = 300.0) -> tuple[int | None, float]:
    """Wait until the target has written its queued audit records: (backlog at the call,
    seconds waited). Without a readable backlog: (None, 0.0)."""
    start = time.monotonic()
    first = pending = audit_pending(target)
    while pending and time.monotonic() - start < limit_s:
        time.sleep(0.05)
        pending = audit_pending(target)
    return first, (time.monotonic() - start) if first else 0.0


def _add_src_path(env: dict[str, str]) -> None:
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)


def lockgate_command(lockgate_bin: Path) -> list[str]:
    """``[lockgate_bin]`` if it exists, else this Python running the CLI from ``src/``."""
    if lockgate_bin.exists():
        return [str(lockgate_bin)]
    return [sys.executable, "-c", "from lockgate.cli import main; main()"]


def _create_virtual_key(lockgate_cmd: Sequence[str], config: Path, env: Mapping[str, str],
                        notes: list[str]) -> str:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*lockgate_cmd, *args, "--config", str(config)],
                              env=dict(env), capture_output=True, text=True, timeout=120)

    team = cli("teams", "create", "bench")
    created = cli("keys", "create", "--team", "bench", "--name", "bench")
    lines = [ln.strip() for ln in created.stdout.splitlines() if ln.strip()]
    if team.returncode == 0 and created.returncode == 0 and lines and " " not in lines[-1]:
        return lines[-1]
    notes.append("virtual key creation failed, used the master key: "
                 f"{(team.stderr or created.stderr).strip()[:200]}")
    return MASTER_KEY


def ensure_litellm_venv(venv: Path, version: str = LITELLM_VERSION) -> Path:
    """Create ``venv`` with ``litellm[proxy]==version`` unless it already has it."""
    exe = venv / "bin" / "litellm"
    marker = venv / f".litellm-{version}"
    if exe.exists() and marker.exists():
        return exe
    print(f"[bench] installing litellm[proxy]=={version} into {venv} (one time) ...", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                    f"litellm[proxy]=={version}"], check=True)
    marker.write_text(version + "\n")
    return exe


def _litellm_config(path: Path, upstream_url: str) -> Path:
    base = upstream_url.removesuffix(CHAT_PATH) + "/v1"
    path.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: {base}\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
    )
    return path


def start_litellm(
    group: ProcessGroup,
    workdir: Path,
    upstream_url: str,
    workers: int,
    litellm_exe: Path,
    tag: str = "",
) -> Target:
    """Start LiteLLM's proxy (no database, debug off) with ``workers`` workers."""
    stem = f"litellm-w{workers}{tag}"
    config = _litellm_config(workdir / f"{stem}.yaml", upstream_url)
    env = _clean_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    port = free_port()
    argv: Sequence[str] = [str(litellm_exe), "--config", str(config), "--host", "127.0.0.1",
                           "--port", str(port), "--num_workers", str(workers)]
    server = group.start(stem, argv, workdir / f"{stem}.log", env=env, cwd=workdir)
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    url = f"http://127.0.0.1:{port}{CHAT_PATH}"
    wait_until(lambda: _answers_chat(url, headers), 180, server, f"litellm ({workers} workers)")
    target = Target(f"litellm w={workers}", "litellm", workers, url, headers, server,
                    overhead_header="x-litellm-overhead-duration-ms")
    _check_chat(target)
    return target


def drop_redis_prefix(prefix: str, url: str = "redis://127.0.0.1:6379/0") -> None:
    """Delete the keys a bench target wrote under its own Redis prefix (best effort)."""
    try:
        import redis
    except ImportError:
        return
    r = redis.Redis.from_url(url)
    try:
        keys = list(r.scan_iter(match=prefix + "*", count=1000))
        if keys:
            r.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        r.close()
