"""The command line reads like a tool's: global options after the sub-command, metavars that say
what to type, no Python type names, one error style."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from shipper.cli.polish import hoist_globals
from tests.support import cli_argv

COMMANDS = {"tail", "send", "collect", "ping", "status", "validate"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "160"})


def test_global_options_move_before_the_sub_command():
    assert hoist_globals(["tail", "a.log", "--log-level", "debug", "--once"], COMMANDS) == \
        ["--log-level", "debug", "tail", "a.log", "--once"]
    assert hoist_globals(["--log-format", "json", "tail", "--log-level=error", "--", "--log-level"], COMMANDS) == \
        ["--log-format", "json", "--log-level=error", "tail", "--", "--log-level"]
    assert hoist_globals(["--version"], COMMANDS) == ["--version"]


def test_log_level_after_the_sub_command_is_accepted(tmp_path):
    r = run("validate", str(tmp_path / "none.toml"), "--log-level", "debug")
    assert "No such option" not in r.stderr
    assert r.returncode == 2 and "no such file" in r.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_what_to_type_not_python_types(command):
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    for python in ("<bool>", "<str>", "<float", "<int", "{", "<list"):
        assert python not in r.stdout, (python, r.stdout)
    assert not re.search(r"\w \.( |$)", r.stdout, re.M), r.stdout  # no stray space before a period
    assert "Example" in r.stdout


def test_tail_help_metavars():
    out = run("tail", "--help").stdout
    for flag, metavar in (("--to", "HOST:PORT[,...]"), ("--deadline", "SECONDS"), ("--capacity", "SIZE"),
                          ("--state-dir", "PATH"), ("--batch-size", "N"), ("--balance", "failover|round_robin")):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"│ {flag} "))
        assert metavar in line, line


def test_a_run_builds_its_sub_command_alone_and_the_same_as_in_the_whole_app():
    """``main`` builds only the sub-command a run names (the others cost ~10 ms of every start):
    the names come from the registrations, and each command built alone has the same options,
    metavars, defaults and help as in the whole app."""
    from shipper.cli import build, command_names
    from shipper.cli.polish import polish

    whole = polish(build())
    assert command_names() == set(whole.commands)
    for name in sorted(command_names()):
        alone = polish(build(name))
        assert list(alone.commands) == [name]
        mine, theirs = alone.commands[name], whole.commands[name]
        ctx = typer_ctx(mine)
        assert mine.get_help(ctx) == theirs.get_help(typer_ctx(theirs))
        assert [p.name for p in mine.params] == [p.name for p in theirs.params]
        assert [p.default for p in mine.params] == [p.default for p in theirs.params]
    assert set(polish(build()).commands) == command_names()  # the app itself was left whole


def typer_ctx(command):
    from typer import _click as click

    return click.Context(command, info_name=command.name)


def test_help_before_the_sub_command_still_lists_every_command():
    r = run("--help", "tail")
    assert r.returncode == 0
    for name in ("collect", "send", "tail", "status", "channel"):
        assert name in r.stdout
