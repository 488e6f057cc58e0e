"""``lockgate facade``: start-up problems are one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lockgate.cli.app import app


def test_no_facades_configured(tmp_path: Path) -> None:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(f"home: {tmp_path / 'h'}\n")
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg)])
    assert r.exit_code == 2 and "no facades configured" in r.output


def test_unknown_task_and_unknown_name(tmp_path: Path) -> None:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'h'}\nfacades:\n  - name: crm\n    port: 18089\n"
        "    upstream: http://127.0.0.1:9\n    rules:\n      - name: r\n"
        "        match: {path: /x}\n        task: no_such_task\n"
        "        to: {response_header: X-A}\n")
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg)])
    assert r.exit_code == 1 and "unknown task 'no_such_task'" in r.output, r.output
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg), "--name", "erp"])
    assert r.exit_code == 2 and "unknown facade(s): erp" in r.output


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'h'}\nfacades:\n  - name: crm\n    port: 18089\n"
        "    upstream: http://127.0.0.1:9\n    rules:\n      - name: r\n"
        "        match: {path: /x}\n        task: gist\n")
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg)])
    assert r.exit_code == 2 and "needs 'task' and 'to'" in r.output, r.output
