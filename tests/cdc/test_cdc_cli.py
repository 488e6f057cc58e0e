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


def test_cli_ops_and_on_delete(userdb: UserDb) -> None:
    cli = CliRunner()
    r = cli.invoke(app, ["cdc", "install", "--dsn", userdb.url, "--table", "tickets",
                         "--columns", "body", "--ops", "insert,merge"])
    assert r.exit_code == 1 and "unknown operation 'merge'" in r.output, r.output
    assert "Traceback" not in r.output
    r = cli.invoke(app, ["cdc", "install", "--dsn", userdb.url, "--table", "tickets",
                         "--columns", "body", "--ops", "insert,update,delete"])
    assert r.exit_code == 0 and "ops insert,update,delete" in r.output, r.output
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'a')")
    userdb.q("DELETE FROM tickets WHERE id = 1")
    r = cli.invoke(app, ["cdc", "list", "--dsn", userdb.url])
    assert "ops=insert,update,delete" in r.output and "pending=2" in r.output, r.output
    r = cli.invoke(app, ["cdc", "run", "--dsn", userdb.url, "--capture", "tickets",
                         "--task", "gist", "--side-table", "x", "--on-delete", "shred"])
    assert r.exit_code == 2 and "--on-delete 'shred'" in r.output, r.output
    r = cli.invoke(app, ["cdc", "uninstall", "--dsn", userdb.url])
    assert r.exit_code == 0 and "removed: tickets" in r.output


def test_config_on_delete_is_checked() -> None:
    import pytest

    from lockgate.errors import ConfigError
    from lockgate.settings import parse_config

    base = ("cdc:\n  - {capture: t, dsn: 'postgresql://x/y', task: gist, side_table: s, "
            "on_delete: %s}\n")
    assert parse_config(base % "mark").cdc[0].on_delete == "mark"
    with pytest.raises(ConfigError, match="on_delete"):
        parse_config(base % "shred")
