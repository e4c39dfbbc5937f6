"""Child of test_ack_sync.py: runs a real channel under an fsync-counting LD_PRELOAD shim.

Usage: ack_sync_child STATE_DIR INTERVAL LOG SCRIPT, where SCRIPT is a comma-separated list of
steps: ``put`` (one batch of 10 events), ``ack`` (take and ack one lease), ``wait`` (poll the log
until a sync of the WAL follows the last mark, up to 60 s: the timer's), ``close``, ``kill`` (print
"acked" and sleep: the parent SIGKILLs). Before each step it appends ``mark STEP N`` to LOG, the
file the shim appends ``fsync PATH``/``fdatasync PATH`` lines to.
"""

from __future__ import annotations

import os
import sys
import time

from shipper.channel import Channel


def mark(log: str, text: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"mark {text}\n".encode())
    finally:
        os.close(fd)


def main() -> None:
    state, interval, log, script = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    ch = Channel.open(state, min_free_bytes=0, ack_sync_interval=interval)
    n = 0
    for i, step in enumerate(script.split(",")):
        mark(log, f"{step} {i}")
        if step == "put":
            ch.put([b"event %d" % (n + k) for k in range(10)], {"file": b"%d" % (n + 10)})
            n += 10
        elif step == "ack":
            lease = ch.take(10, 1 << 20)
            assert lease is not None, "nothing to take"
            ch.ack(lease)
        elif step == "wait":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with open(log) as f:
                    tail = f.read().rsplit("mark ", 1)[1]
                if "-wal" in tail.split("\n", 1)[1]:
                    break
                time.sleep(0.05)
        elif step == "close":
            ch.close()
        elif step == "kill":
            print("acked", flush=True)
            time.sleep(600)
    print("done", flush=True)


if __name__ == "__main__":
    main()
