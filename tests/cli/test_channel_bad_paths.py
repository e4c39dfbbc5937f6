"""`flume-ship channel ...` on a state directory that is not a usable channel: a garbage file, a
directory where the database should be, a missing path, an unreadable database. Each sub-command
says what is wrong in one line and exits 5, prints no counts before the problem, and creates or
salvages nothing."""

from __future__ import annotations

import os
import subprocess

import pytest

from shipper.channel import Channel
from shipper.errors import EXIT_STATE
from tests.support import cli_argv
from tests.unprivileged import unprivileged

COMMANDS = [
    ("verify",),
    ("dead-letters", "list"),
    ("dead-letters", "show", "1"),
    ("dead-letters", "export", "--all", "-o", "OUT"),
    ("dead-letters", "requeue", "--all"),
    ("dead-letters", "purge", "--all"),
]


def channel(state, *args, out=None, preexec_fn=None) -> subprocess.CompletedProcess:
    argv = [a.replace("OUT", str(out)) for a in args]
    return subprocess.run(cli_argv("channel", *argv, "--state-dir", str(state)), capture_output=True, text=True,
                          timeout=60, preexec_fn=preexec_fn)


def one_line_exit_5(r: subprocess.CompletedProcess, says: str) -> None:
    assert r.returncode == EXIT_STATE, r.stderr
    assert r.stdout == "", r.stdout  # no counts before the problem
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flume-ship: error: "), r.stderr
    assert says in lines[0], lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: "-".join(a[:2]))
@pytest.mark.parametrize("what, says", [
    ("garbage", "is not an SQLite database (garbage or another kind of file); check --state-dir"),
    ("damaged", "file is not a database"),
    ("damaged-claiming-wal", "file is not a database"),
    ("directory", "channel.db is a directory, not a channel database; check --state-dir"),
    ("missing", "no channel database at"),
    ("state-dir-is-a-file", "is not a directory; check --state-dir"),
])
def test_channel_commands_on_a_bad_state_dir(tmp_path, args, what, says):
    state = tmp_path / "state"
    state.mkdir()
    db = state / "channel.db"
    if what == "garbage":
        db.write_bytes(os.urandom(5000))
    elif what.startswith("damaged"):  # SQLite's header, then garbage: SQLite itself refuses it
        head = bytearray(b"SQLite format 3\x00" + os.urandom(8000))
        # bytes 18-19 say the journal mode: 1 (rollback) or, claiming WAL, 2, which makes SQLite create
        # -wal and -shm files even read-only (left behind, they broke "nothing created")
        head[18] = head[19] = 2 if what == "damaged-claiming-wal" else 1
        db.write_bytes(bytes(head))
    elif what == "directory":
        db.mkdir()
    elif what == "missing":
        state = tmp_path / "no-such-dir"
    elif what == "state-dir-is-a-file":
        state = tmp_path / "a-file"
        state.write_bytes(b"x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = channel(state, *args, out=tmp_path / "out.txt")
    if what.startswith("damaged") and args[0] == "dead-letters":
        says = "file is not a database; run flume-ship channel verify" if args[1] in ("list", "show") else \
            "is damaged (file is not a database); run flume-ship channel verify"
    one_line_exit_5(r, says)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created, moved or salvaged


@pytest.mark.parametrize("args", COMMANDS[:4], ids=lambda a: "-".join(a[:2]))
def test_channel_commands_on_an_unreadable_database(tmp_path, args):
    """Even as root: the command runs without root's permission bypass (tests.unprivileged)."""
    state = tmp_path / "state"
    Channel.open(state, min_free_bytes=0).close()
    (state / "channel.db").chmod(0)
    r = channel(state, *args, out=tmp_path / "out.txt", preexec_fn=unprivileged())
    one_line_exit_5(r, "cannot read")
    assert "Permission denied; run as the agent's user" in r.stderr
    assert not (tmp_path / "out.txt").exists()
