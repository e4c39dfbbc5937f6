"""``flume-ship collect`` as the receiving end of interop cases: start it, read what it wrote.

A collector listens on 127.0.0.1 port 0 and the real port is read from its "listening on HOST:PORT"
log line, so there is no race for a port. ``--format jsonl`` keeps headers: each record is
``{"headers": {...}, "body": "..."}`` (or ``"body_base64"`` when the body is not UTF-8).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from tests.support import Proc


class Collect:
    def __init__(self, out: Path, *flags: str, label: str = "collect"):
        self.out = out
        self.label = label
        self.proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), "--format", "jsonl", *flags)
        m = self.proc.wait_for(r"listening on (\S+):(\d+)", timeout=30)
        self.port = int(m.group(2))

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def records(self) -> list[dict]:
        """Every record written so far, files in name order (names start with their UTC start time)."""
        found = []
        if not self.out.exists():
            return found
        for path in sorted(self.out.glob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    break  # a batch being written right now; the next poll sees it whole
                if "body_base64" in rec:
                    rec["body"] = base64.b64decode(rec.pop("body_base64"))
                else:
                    rec["body"] = rec["body"].encode()
                found.append(rec)
        return found

    def stop(self, sig: int = 15) -> int:
        return self.proc.stop(sig)

    def kill(self) -> int:
        return self.proc.kill()


def wait_records(collects: list[Collect], match, count: int, timeout: float = 90.0) -> list[dict]:
    """Poll until the collectors together hold ``count`` records for which ``match(rec)`` is true.

    A failure guard, not a timing check: it returns what it has when time runs out and the caller's
    assertion shows the difference.
    """
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for c in collects for r in c.records() if match(r)]
        if len(recs) >= count or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)
