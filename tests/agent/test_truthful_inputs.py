"""Bad paths given to flume-ship, as a new user gives them: a configuration file that is a
directory, missing or unreadable (even as root: tests.unprivileged), and `send` of a file that is
not there. One line each, saying what and what to do, the documented code, no traceback."""

from __future__ import annotations

import subprocess

import pytest

from shipper.errors import EXIT_INPUT, EXIT_USAGE
from tests.support import cli_argv
from tests.unprivileged import unprivileged


def run(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=60, preexec_fn=preexec_fn)


def one_line(r: subprocess.CompletedProcess, code: int, says: str) -> None:
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if " INFO " not in ln]
    assert len(lines) == 1 and lines[0].startswith("flume-ship: error: "), r.stderr
    assert says in lines[0], lines[0]


@pytest.mark.parametrize("command", [("validate",), ("tail", "--once", "--config"), ("status", "--config"),
                                     ("channel", "verify", "--config")], ids=lambda c: c[0])
@pytest.mark.parametrize("what", ["directory", "missing", "unreadable"])
def test_config_path_that_cannot_be_read(tmp_path, command, what):
    path = {"directory": tmp_path, "missing": tmp_path / "none.toml", "unreadable": tmp_path / "secret.toml"}[what]
    if what == "unreadable":
        path.write_text('[delivery]\ncollectors = ["127.0.0.1:4141"]\n')
        path.chmod(0)
    r = run(*command, str(path), preexec_fn=unprivileged())
    says = {"directory": f"{path}: cannot read (Is a directory); give the path of a readable TOML file",
            "missing": f"{path}: no such file (give the path of an existing config file)",
            "unreadable": f"{path}: cannot read (Permission denied); give the path of a readable TOML file"}[what]
    one_line(r, EXIT_USAGE, says)


def test_send_of_a_missing_file_says_what_to_do(tmp_path):
    r = run("send", str(tmp_path / "none.log"), "--to", "127.0.0.1:9")
    one_line(r, EXIT_INPUT, "cannot read " + str(tmp_path / "none.log") + ": No such file or directory; give a "
             "readable file, or - for standard input")
