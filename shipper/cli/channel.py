"""``flume-ship channel verify``: the read-only integrity check of the channel."""

from __future__ import annotations

import os
from typing import Optional

import typer

from shipper.cli.app import app, report
from shipper.cli.options import state_dir_from_config
from shipper.errors import EXIT_STATE, StateError
from shipper.ops.progress import counted


channel_app = typer.Typer(help="Inspect the durable channel in the state directory.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")


@channel_app.command("verify")
def channel_verify(
    state_dir: Optional[str] = typer.Option(
        None, "--state-dir", envvar="FLUME_SHIP_STATE_DIR", help="State directory (default: the config "
        "file's channel.state_dir, else /var/lib/flume-ship for root, else $XDG_STATE_HOME/flume-ship or "
        "~/.local/state/flume-ship)."
    ),
    config: Optional[str] = typer.Option(None, "--config", envvar="FLUME_SHIP_CONFIG",
                                         help="Config file to take the state directory from."),
) -> None:
    """Run the full integrity check on the channel, read-only (safe while an agent runs).

    Exit 0 when healthy, 5 when the database is corrupt or unusable.

    Example: flume-ship channel verify --state-dir /var/lib/flume-ship
    """
    from shipper.channel import verify

    result = verify(state_dir or state_dir_from_config(config))
    if not result.healthy and result.format_version is None:  # nothing could be read: no counts to show
        raise report(StateError(f"{result.db_path}: {'; '.join(result.problems)}; the next agent start moves it "
                                "aside and salvages what it can"))
    for line in result.lines():
        typer.echo(line)
    if not result.healthy:
        raise typer.Exit(EXIT_STATE)


# --------------------------------------------------------------------------- dead letters

dead_app = typer.Typer(help="Batches collectors rejected max_rejects times: list, show, export, re-queue, purge.",
                       no_args_is_help=True)
channel_app.add_typer(dead_app, name="dead-letters")

_STATE_DIR = typer.Option(None, "--state-dir", envvar="FLUME_SHIP_STATE_DIR",
                          help="State directory (default: the config file's channel.state_dir).")
_CONFIG = typer.Option(None, "--config", envvar="FLUME_SHIP_CONFIG", help="Config file to take the state "
                       "directory from.")


def _state(state_dir: Optional[str], config: Optional[str], *, existing: bool = False):
    """The state directory; with ``existing``, refused (one line, exit 5) unless it holds a readable
    channel database, so a command that writes never creates or salvages a channel by mistake."""
    from pathlib import Path

    from shipper.channel.store import DB_NAME, _precheck, connect_ro
    from shipper.errors import ShipperError

    path = Path(state_dir or state_dir_from_config(config))
    if existing:
        try:
            connect_ro(path / DB_NAME).close()
            damage = _precheck(path / DB_NAME)
        except ShipperError as exc:
            raise report(exc)
        if damage:
            raise report(StateError(f"{path / DB_NAME} is damaged ({damage}); run flume-ship channel verify, then "
                                    "start the agent once: it moves the file aside and salvages what it can"))
    return path


def _ids(ids: Optional[list[int]], every: bool, verb: str) -> Optional[list[int]]:
    from shipper.errors import ConfigError

    if bool(ids) == every:
        raise report(ConfigError(f"{verb}: give dead-letter IDs (see `flume-ship channel dead-letters list`) "
                                 "or --all, not both"))
    return None if every else list(ids)


@dead_app.command("list")
def dead_list(state_dir: Optional[str] = _STATE_DIR, config: Optional[str] = _CONFIG,
              as_json: bool = typer.Option(False, "--json", help="One JSON object per batch.")) -> None:
    """List the dead-lettered batches (read-only: safe while an agent runs).

    Example: flume-ship channel dead-letters list --state-dir /var/lib/flume-ship
    """
    import json
    import time

    from shipper.channel.deadletter import list_dead
    from shipper.errors import ShipperError

    try:
        batches = list_dead(_state(state_dir, config))
    except ShipperError as exc:
        raise report(exc)
    for b in batches:
        if as_json:
            typer.echo(json.dumps({"id": b.id, "group": b.group, "events": b.count, "bytes": b.nbytes,
                                   "put_at": b.put_at, "dead_at": b.dead_at, "reason": b.reason}))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.dead_at))
            typer.echo(f"{b.id}\t{b.group or '-'}\t{counted(b.count, 'event')}\t{b.nbytes} bytes\t{when}\t{b.reason}")
    if not batches and not as_json:
        typer.echo("no dead letters")


@dead_app.command("show")
def dead_show(ids: list[int] = typer.Argument(..., metavar="ID", help="Dead-letter IDs."), state_dir: Optional[str] = _STATE_DIR,
              config: Optional[str] = _CONFIG) -> None:
    """Print the events of dead-lettered batches as JSON lines (headers and body).

    Example: flume-ship channel dead-letters show 3 4 | jq -r .body
    """
    import sys

    _export_to(sys.stdout.buffer, ids, "jsonl", state_dir, config)


@dead_app.command("export")
def dead_export(ids: Optional[list[int]] = typer.Argument(None, metavar="ID", help="Dead-letter IDs (or --all)."),
                every: bool = typer.Option(False, "--all", help="Every dead letter."),
                out: str = typer.Option(..., "--out", "-o", metavar="FILE", help="File to write (\"-\": standard output)."),
                fmt: str = typer.Option("lines", "--format", metavar="lines|jsonl", help="lines (event bodies, one a line) or jsonl "
                                        "(headers and body)."),
                state_dir: Optional[str] = _STATE_DIR, config: Optional[str] = _CONFIG) -> None:
    """Write dead-lettered events to a file; they stay dead-lettered (purge or requeue them after).

    Example: flume-ship channel dead-letters export --all --format jsonl --out /tmp/rejected.jsonl
    """
    import sys

    from shipper.errors import ConfigError

    if fmt not in ("lines", "jsonl"):
        raise report(ConfigError(f"--format: {fmt!r} is not lines or jsonl"))
    chosen = _ids(ids, every, "export")
    _state(state_dir, config, existing=True)  # before --out is created
    if out == "-":
        n = _export_to(sys.stdout.buffer, chosen, fmt, state_dir, config)
    else:
        try:
            with open(out, "wb") as fh:
                n = _export_to(fh, chosen, fmt, state_dir, config)
        except OSError as exc:
            raise report(ConfigError(f"--out: cannot write {out}: {exc.strerror or exc}"))
        except BaseException:  # the channel failed half-way: leave no half-written export behind
            os.unlink(out)
            raise
    typer.echo(f"exported {counted(n, 'event')} to {out}", err=True)


def _export_to(fh, ids, fmt, state_dir, config) -> int:
    from shipper.avroipc.flume_event import read_event
    from shipper.channel.deadletter import export, read_events
    from shipper.errors import ShipperError

    try:
        return export(read_events(_state(state_dir, config), ids), fh, fmt, read_event)
    except ShipperError as exc:
        raise report(exc)


def _write(state_dir, config, offline, running):
    """``offline(channel)`` with the state directory's lock when no agent runs; else
    ``running(state_dir, pid)`` beside the agent (see shipper.channel.deadrequests)."""
    from shipper.channel import Channel
    from shipper.errors import ShipperError, StateLocked
    from shipper.ops.status import lock_holder

    path = _state(state_dir, config, existing=True)  # never create or salvage a channel here
    try:
        ch = Channel.open(path, min_free_bytes=0)
    except StateLocked:
        try:
            return running(path, lock_holder(path))
        except ShipperError as exc:
            raise report(exc)
    except ShipperError as exc:
        raise report(exc)
    try:
        return offline(ch)
    except ShipperError as exc:
        raise report(exc)
    finally:
        ch.close()


def _requeue_beside(path, pid, chosen, group, wait: float):
    """Ask the running agent to re-queue, wait for it, and withdraw what it did not do in time."""
    import time

    from shipper.channel import deadrequests
    from shipper.errors import ConfigError, StateLocked

    asked = deadrequests.ask_requeue(path, chosen, group)
    ids = sorted(asked)
    if not ids:
        return 0, 0
    deadline = time.monotonic() + wait
    while True:
        left, error = deadrequests.requests_left(path, ids)
        if not left or error or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    still = set(deadrequests.withdraw(path, left)) if left else set()
    done = [i for i in ids if i not in still]
    if error:
        raise ConfigError(f"--group: {error}; {len(done)} of {len(ids)} batches re-queued")
    if still:
        raise StateLocked(f"the running agent (pid {pid}) did not take the re-queue within {wait:g}s "
                          f"(is it running with --once, or an older flume-ship?); {len(done)} of {len(ids)} batches "
                          "re-queued, the others are still dead letters: try again with a longer --wait, or stop "
                          "the agent first")
    return len(done), sum(asked[i] for i in done)


@dead_app.command("requeue")
def dead_requeue(ids: Optional[list[int]] = typer.Argument(None, metavar="ID", help="Dead-letter IDs (or --all)."),
                 every: bool = typer.Option(False, "--all", help="Every dead letter."),
                 group: Optional[str] = typer.Option(None, "--group", metavar="GROUP", help="The group to deliver them to "
                                                     "(default: the group that gave up on them)."),
                 wait: float = typer.Option(30.0, "--wait", min=0.1, help="While an agent runs: seconds to wait "
                                            "for it to re-queue them (it does at its next status tick)."),
                 state_dir: Optional[str] = _STATE_DIR, config: Optional[str] = _CONFIG) -> None:
    """Put dead-lettered batches back at the end of the queue (a running agent does it for you).

    Example: flume-ship channel dead-letters requeue 3 --group archive
    """
    from shipper.channel.deadletter import requeue

    chosen = _ids(ids, every, "requeue")

    def offline(ch):
        if group is not None:
            _known_group(ch, group, config)
        return requeue(ch, chosen, group)

    batches, events = _write(state_dir, config, offline,
                             lambda path, pid: _requeue_beside(path, pid, chosen, group, wait))
    typer.echo(f"re-queued {counted(batches, 'batch', 'batches')} ({counted(events, 'event')})"
               + (f" for group {group}" if group else ""))


def _known_group(ch, group: str, config: Optional[str]) -> None:
    """With the agent stopped, ``requeue --group`` must name a group the channel has held events
    for or the config file declares: a typo would park the batches where no agent ever sends them
    (a running agent refuses an unknown group itself)."""
    import sqlite3

    from shipper.agent.config import default_config_path, load_raw
    from shipper.channel.groups import group_of
    from shipper.errors import ConfigError, ConfigFileError

    known: set[str] = set()
    for table in ("group_pending", "dead_letters"):
        try:
            known |= {group_of(g) for (g,) in ch._conn.execute(f"SELECT DISTINCT grp FROM {table}") if g}
        except sqlite3.OperationalError:  # a channel that never had groups or dead letters has no such table
            pass
    path = config or default_config_path()
    if path:
        try:
            tables = load_raw(path).get("groups", {})
        except ConfigFileError as exc:
            raise ConfigError(f"--group: cannot check {group!r} against the config file: {exc}") from None
        known |= set(tables) if isinstance(tables, dict) else set()
    if group not in known:
        raise ConfigError(f"--group: no group named {group!r} in the channel or the config file (groups: "
                          f"{', '.join(sorted(known)) or 'none'}); name one of them, or give --config with the "
                          "file that declares it")


@dead_app.command("purge")
def dead_purge(ids: Optional[list[int]] = typer.Argument(None, metavar="ID", help="Dead-letter IDs (or --all)."),
               every: bool = typer.Option(False, "--all", help="Every dead letter."),
               state_dir: Optional[str] = _STATE_DIR, config: Optional[str] = _CONFIG) -> None:
    """Delete dead-lettered batches for good (safe while an agent runs).

    Example: flume-ship channel dead-letters purge --all
    """
    from shipper.channel.deadletter import purge
    from shipper.channel.deadrequests import purge_beside

    chosen = _ids(ids, every, "purge")
    batches, events = _write(state_dir, config, lambda ch: purge(ch, chosen),
                             lambda path, _pid: purge_beside(path, chosen))
    typer.echo(f"purged {counted(batches, 'batch', 'batches')} ({counted(events, 'event')}): they are gone")
