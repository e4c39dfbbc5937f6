"""Every error is one line in one style, ``flume-ship: error: WHAT; WHAT TO DO``, with the documented
exit code: click's usage errors (a bad flag, a missing argument, a bad value, an unknown command)
included, on the real command line. ``--help`` stays rich."""

from __future__ import annotations

import os
import subprocess

import pytest

from shipper.errors import EXIT_OK, EXIT_USAGE
from tests.support import cli_argv


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "80"})


@pytest.mark.parametrize("args, says", [
    (("tail", "a.log", "--to", "127.0.0.1:4141", "--bogus"),
     "flume-ship: error: tail: no such option: --bogus; see 'flume-ship tail --help'"),
    (("tail", "a.log", "--to", "127.0.0.1:4141", "--balanse", "random"),
     "flume-ship: error: tail: no such option: --balanse (did you mean --balance?); see 'flume-ship tail --help'"),
    (("send", "--to", "127.0.0.1:4141"),
     "flume-ship: error: send: missing argument 'FILE'; see 'flume-ship send --help'"),
    (("send", "a.log", "--to"),
     "flume-ship: error: send: option '--to' requires an argument; see 'flume-ship send --help'"),
    (("tail", "a.log", "--to", "127.0.0.1:4141", "--batch-size", "lots"),
     "flume-ship: error: tail: invalid value for '--batch-size': input should be a valid integer, unable to parse "
     "string as an integer (got 'lots'); see 'flume-ship tail --help'"),
    (("tail", "a.log", "--to", "127.0.0.1:4141", "--sinks", "0"),
     "flume-ship: error: tail: invalid value for '--sinks': input should be greater than or equal to 1 (got '0')"),
    (("tail", "a.log", "--to", "127.0.0.1:4141", "--log-level", "loud"),
     "flume-ship: error: invalid value for --log-level: use debug, info, warning or error; see 'flume-ship --help'"),
    (("send", "a.log", "--to", "127.0.0.1:4141", "--in-flight", "99999999999999999999"),
     "flume-ship: error: send: invalid value for '--in-flight': "),
    (("send", "a.log", "--to", "127.0.0.1:4141", "--progress-interval", "nan"),
     "flume-ship: error: send: invalid value for '--progress-interval': must be a finite number, not nan"),
    (("tail", "a.log", "--to", "127.0.0.1:4141", "--give-up-after", "-inf"),
     "flume-ship: error: tail: invalid value for '--give-up-after': must be a finite number, not -inf"),
    (("sned", "a.log"), "flume-ship: error: no such command 'sned' (did you mean 'send'?); see 'flume-ship --help'"),
    (("channel", "verfy"), "flume-ship: error: channel: no such command 'verfy'"),
    (("tail", "a.log", "--deadline", "5", "--to", "127.0.0.1:4141"),
     "flume-ship: error: tail: invalid value for --deadline: only makes sense with --once"),
])
def test_usage_errors_are_one_line_with_exit_2(args, says):
    r = run(*args)
    assert r.returncode == EXIT_USAGE, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(says), lines[0]
    assert "╭" not in r.stderr and "Usage:" not in r.stderr and "Traceback" not in r.stderr


def test_our_own_errors_share_the_style(tmp_path):
    r = run("tail", "a.log", "--to", "127.0.0.1:0", "--state-dir", str(tmp_path))
    assert r.returncode == EXIT_USAGE
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("flume-ship: error: "), r.stderr


def test_help_stays_rich():
    r = run("tail", "--help")
    assert r.returncode == EXIT_OK
    assert "╭" in r.stdout and "--batch-size" in r.stdout and r.stderr == ""
