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
