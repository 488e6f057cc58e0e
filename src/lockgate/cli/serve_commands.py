"""``lockgate up`` (embedded defaults, first-run keys) and ``lockgate serve``."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

import typer

from lockgate.cli.common import ConfigOption, console, fail, get_config, run
from lockgate.cli.facade_commands import check_facades
from lockgate.errors import ConfigError
from lockgate.interpreter import apply_malloc_env
from lockgate.jobs.embedded import EMBEDDED_WORKER_ENV
from lockgate.jobs.tasks import TaskError
from lockgate.runtime import MASTER_HASH_FILE, Runtime, master_key_hash, save_master_key_hash
from lockgate.server import CONFIG_ENV
from lockgate.serving import COMMAND, serve_args
from lockgate.serving import main as serving_main
from lockgate.settings import Config
from lockgate.store import Store, StoreError

DEFAULT_TEAM = "default"


def preflight(cfg: Config) -> None:
    """Build the runtime once and close it before serving, so a start-up problem (an unset
    ``env:`` key, an unknown shadow candidate, an unreachable database or queue...) is one
    line naming it and a non-zero exit, not a uvicorn lifespan traceback per worker."""

    async def check() -> None:
        runtime = await Runtime.start(cfg, warm_up=False)
        await runtime.aclose()
        if cfg.facades:
            await check_facades(cfg)  # unknown rule tasks: one line here

    try:
        run(check)
    except (ConfigError, StoreError, ValueError, OSError, TaskError) as exc:
        fail(f"cannot start: {exc}")
    except Exception as exc:  # anything else still gets one line, with its kind
        fail(f"cannot start: {type(exc).__name__}: {exc}")


SERVE_IN_PROCESS_ENV = "LOCKGATE_SERVE_IN_PROCESS"
"""Set to 1 to serve in the command's own process instead of exec-ing
:mod:`lockgate.serving` (bench probes that wrap the CLI need that; it costs the
gateway the command line's ~13 MB of modules)."""


def _serve(cfg: Config, config_path: Path | None, host: str, port: int, workers: int) -> None:
    preflight(cfg)

    if config_path is not None:
        os.environ[CONFIG_ENV] = str(config_path.resolve())
    else:
        os.environ.pop(CONFIG_ENV, None)
    os.environ.setdefault("LOCKGATE_HOME", str(cfg.home_path.resolve()))
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lockgate-metrics-")
    args = serve_args(host, port, workers)
    if os.environ.get(SERVE_IN_PROCESS_ENV) == "1":
        raise typer.Exit(serving_main(args))
    argv = [*COMMAND, *args]
    apply_malloc_env(os.environ)  # read by the C library when the new process starts
    # the gateway starts in a clean interpreter (same PID): what the CLI imported stays out
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        fail(f"cannot start the server process {argv[0]}: {exc}")


def serve(
    config: Path | None = ConfigOption,
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port", "-p"),
    workers: int | None = typer.Option(None, "--workers", "-w"),
) -> None:
    """Serve the gateway with a config file.

    Jobs, batches and reviewed-job resumptions run in separate ``lockgate worker``
    processes (any number, on any machine sharing the queue), unless ``jobs.embedded_worker``
    is on or LOCKGATE_EMBEDDED_WORKER=1 (then every gateway process runs one as well)."""
    cfg = get_config(config)
    if master_key_hash(cfg) is None:
        fail("no master key: set LOCKGATE_MASTER_KEY or master_key in the config "
             "(or run 'lockgate up' once to generate one)")
    _serve(cfg, config, host or cfg.server.host, port or cfg.server.port,
           workers or cfg.server.workers)


def _first_run(cfg: Config) -> tuple[str | None, str | None]:
    """Generate the master key and a default team key on the very first start."""
    master: str | None = None
    if master_key_hash(cfg) is None:
        master = "lg-master-" + secrets.token_urlsafe(32)
        save_master_key_hash(cfg.home_path, master)

    async def ensure_default_key() -> str | None:
        store = await Store.open(cfg.effective_database_url)
        try:
            if await store.get_team(DEFAULT_TEAM) is not None:
                return None
            await store.create_team(DEFAULT_TEAM)
            plaintext, _ = await store.create_key(DEFAULT_TEAM, name="default")
            return plaintext
        finally:
            await store.close()

    return master, run(ensure_default_key)


def up(
    config: Path | None = ConfigOption,
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port", "-p"),
    worker: bool = typer.Option(
        True, "--worker/--no-worker",
        help="Run a job worker in the gateway process (jobs and batches need no second "
             "command); --no-worker when 'lockgate worker' processes run elsewhere.",
    ),
) -> None:
    """Start with embedded defaults: SQLite under .lockgate/, the bundled local model, a job
    worker in the same process."""
    os.environ[EMBEDDED_WORKER_ENV] = "1" if worker else "0"
    cfg = get_config(config)
    cfg.home_path.mkdir(parents=True, exist_ok=True)
    master, key = _first_run(cfg)
    host = host or cfg.server.host
    port = port or cfg.server.port
    base = f"http://{host}:{port}"
    console.rule("[bold]lockgate")
    if master:
        console.print(f"admin (master) key, shown once:  [bold]{master}[/]", highlight=False)
    else:
        console.print(f"admin key: set earlier (hash in {cfg.home_path / MASTER_HASH_FILE})")
    if key:
        console.print(f"virtual key for team 'default', shown once:  [bold]{key}[/]",
                      highlight=False)
    shown = key or "<virtual key>  (create one: lockgate keys create --team default)"
    model = cfg.model_names()[0] if cfg.model_names() else "local"
    console.print(f"\nmodels: {', '.join(cfg.model_names())}   store: "
                  f"{cfg.effective_database_url}   job worker: "
                  f"{'in this process' if worker else 'off (run lockgate worker)'}\n",
                  highlight=False)
    console.print("[bold]curl[/]", highlight=False)
    console.print(
        f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {shown}' \\\n"
        f"    -H 'Content-Type: application/json' \\\n"
        f"    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", "
        f"\"content\": \"The capital of France is\"}}]}}'",
        highlight=False, soft_wrap=True,
    )
    console.print("[bold]python (openai SDK)[/]", highlight=False)
    console.print(
        f"  from openai import OpenAI\n"
        f"  client = OpenAI(base_url=\"{base}/v1\", api_key=\"{shown}\")\n"
        f"  client.chat.completions.create(model=\"{model}\", "
        f"messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])",
        highlight=False, soft_wrap=True,
    )
    console.print(f"\nserving on {base}  (Ctrl-C to stop)\n", highlight=False)
    _serve(cfg, config, host, port, 1)
