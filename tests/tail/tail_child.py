"""A tail source in a process of its own, for the crash and permission tests.

``python -m tests.tail.tail_child STATE_DIR OPTIONS_JSON``: OPTIONS_JSON holds TailOptions fields
plus ``mode`` ("run" until SIGTERM, or "once") and ``rules`` (the keyword arguments of
``shipper.tail.rules.rules_from``). Prints "ready" on stderr once the channel is open.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

from shipper.channel import Channel
from shipper.tail import TailOptions, TailSource
from shipper.tail.rules import rules_from


def main() -> None:
    state, opts = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    mode = opts.pop("mode", "run")
    if "rules" in opts:
        opts["rules"] = rules_from(**opts["rules"])
    channel = Channel.open(state, min_free_bytes=0)
    source = TailSource(TailOptions(**opts), channel)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", file=sys.stderr, flush=True)
    if mode == "once":
        source.run_once()
    else:
        source.run(stop)
    channel.close()
    print("stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
