"""The root ``lockgate`` typer app."""

from __future__ import annotations

from pathlib import Path

import typer

from lockgate import __version__
from lockgate.cli.admin_commands import keys_app, teams_app, usage
from lockgate.cli.agents_commands import agents_app, mcp_app
from lockgate.cli.alerts_commands import alerts_app
from lockgate.cli.audit_commands import audit_app
from lockgate.cli.cdc_commands import cdc_app
from lockgate.cli.common import console, fail
from lockgate.cli.controls_commands import controls_app
from lockgate.cli.facade_commands import facade
from lockgate.cli.feedback_commands import feedback_app
from lockgate.cli.jobs_commands import batch_app, consume, dlq_app, jobs_app, worker
from lockgate.cli.kg_commands import kg_app
from lockgate.cli.mining_commands import mine
from lockgate.cli.rag_commands import rag_app
from lockgate.cli.review_commands import review_app
from lockgate.cli.serve_commands import serve, up
from lockgate.cli.shadow_commands import shadow_app
from lockgate.errors import ConfigError
from lockgate.settings import load_config

app = typer.Typer(
    name="lockgate",
    help="lockgate: one governed pipeline for every model call.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)

app.command()(up)
app.command()(serve)
app.command()(usage)
app.add_typer(teams_app, name="teams")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
app.add_typer(audit_app, name="audit")
app.add_typer(shadow_app, name="shadow")
app.add_typer(controls_app, name="controls")
app.add_typer(rag_app, name="rag")
app.command()(worker)
app.command()(consume)
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(batch_app, name="batch")
app.add_typer(review_app, name="review")
app.add_typer(feedback_app, name="feedback")
app.add_typer(alerts_app, name="alerts")
app.command()(mine)
app.add_typer(kg_app, name="kg")
app.command()(facade)
app.add_typer(cdc_app, name="cdc")
app.add_typer(agents_app, name="agents")
app.add_typer(mcp_app, name="mcp")


@config_app.command("check")
def config_check(path: Path) -> None:
    """Validate a config file; one line naming field and line if it is wrong."""
    try:
        cfg = load_config(path)
        for m in cfg.models:
            m.resolved_api_key()
        cfg.resolved_master_key()
    except ConfigError as exc:
        fail(str(exc), 2)
    console.print(f"{path}: ok ({len(cfg.models)} deployments, models: "
                  f"{', '.join(cfg.model_names()) or 'none'})", highlight=False)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app()
