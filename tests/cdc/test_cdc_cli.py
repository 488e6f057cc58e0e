"""``lockgate cdc``: install/list/uninstall from the command line; bad input is one line."""

from __future__ import annotations

from typer.testing import CliRunner

from lockgate.cli.app import app
from tests.cdc.conftest import UserDb


def test_cli_install_list_uninstall(userdb: UserDb) -> None:
    cli = CliRunner()
    r = cli.invoke(app, ["cdc", "install", "--dsn", userdb.url, "--table", "tickets",
                         "--columns", "body,status", "--where", "status <> 'spam'"])
    assert r.exit_code == 0, r.output
    assert "installed capture 'tickets'" in r.output and "key id" in r.output
    userdb.q("INSERT INTO tickets (id, body, status) VALUES (1, 'a', 'open')")
    userdb.q("INSERT INTO tickets (id, body, status) VALUES (2, 'b', 'spam')")
    r = cli.invoke(app, ["cdc", "list", "--dsn", userdb.url])
    assert r.exit_code == 0 and "pending=1" in r.output, r.output
    r = cli.invoke(app, ["cdc", "uninstall", "--dsn", userdb.url, "--name", "nope"])
    assert r.exit_code == 1 and "no capture 'nope'" in r.output
    r = cli.invoke(app, ["cdc", "uninstall", "--dsn", userdb.url])
    assert r.exit_code == 0 and "removed: tickets" in r.output


def test_cli_errors_are_one_line(userdb: UserDb) -> None:
    cli = CliRunner()
    r = cli.invoke(app, ["cdc", "install", "--dsn", userdb.url, "--table", "tickets",
                         "--columns", "nope"])
    assert r.exit_code == 1 and "no column 'nope'" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2
    r = cli.invoke(app, ["cdc", "run", "--dsn", userdb.url, "--capture", "tickets",
                         "--task", "gist", "--write-column", "a", "--side-table", "b"])
    assert r.exit_code == 2 and "exactly one" in r.output
    r = cli.invoke(app, ["cdc", "install", "--dsn", "oracle://x/y", "--table", "t",
                         "--columns", "a"])
    assert r.exit_code == 1 and "unsupported database" in r.output
