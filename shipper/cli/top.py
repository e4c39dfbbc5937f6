"""``flume-ship top``: the live view of a running agent (shipper.ops.top), redrawn every second."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Optional

import typer

from shipper.cli.app import app
from shipper.cli.options import OPT_AGENT_STATE_DIR, OPT_CONFIG, state_dir_from_config


@app.command("top")
def top_cmd(
    state_dir: Optional[str] = OPT_AGENT_STATE_DIR,
    config: Optional[str] = OPT_CONFIG,
    interval: float = typer.Option(1.0, "--interval", min=0.1, max=3600, help="Seconds between frames."),
    frames: int = typer.Option(0, "--frames", min=0, help="Stop after this many frames (0: until Ctrl-C)."),
) -> None:
    """A live view of a running agent: per collector, collector group and file rates, lag and state, like vector top.

    Reads the status file the agent rewrites every status_interval (it works on a stopped agent
    too, with no rates). Ctrl-C ends it; exit 0, or 5 when the state directory holds no channel.

    Example: flume-ship top --state-dir /var/lib/flume-ship
    """
    from shipper.ops.status import gather
    from shipper.ops.top import frame

    directory = state_dir or state_dir_from_config(config)
    tty = sys.stdout.isatty()
    prev = cur = None
    shown = 0
    try:
        while True:
            doc = gather(directory)
            if cur is None or doc.written_at != cur.written_at:
                prev, cur = cur, doc
            else:
                cur.agent = doc.agent
            text = frame(cur, prev, shutil.get_terminal_size((120, 40)).columns if tty else 200)
            sys.stdout.write(("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n"))
            sys.stdout.flush()
            shown += 1
            if frames and shown >= frames:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
