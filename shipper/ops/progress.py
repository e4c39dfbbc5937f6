"""Progress a person can see: a log line every ``progress_interval`` seconds, and a live line on a
terminal.

:class:`Progress` turns two readings of the agent's counters (events and bytes acknowledged, from
the telemetry) and its queue (the channel's stats, the bytes still behind in the tailed files) into
one line: what was shipped since the last line and how fast, what is queued, how far the files
are behind, and with ``--once`` an estimate of the time left. It does no I/O and reads no clock of
its own: the agent passes ``now`` and the figures, so the text is tested without waiting.

Off a terminal (services, cron) the agent logs the line every ``progress_interval`` seconds (0:
never), so a long ``--once`` or a quiet service still says it is alive and how it is doing. On a
terminal, ``tail --once`` redraws the line in place on stderr about once a second
(:class:`TerminalLine`), and clears it before any log line and at the end.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass(frozen=True)
class Reading:
    """The figures a progress line is made of, at one moment."""

    now: float  # monotonic seconds
    events_acked: int
    bytes_acked: int
    queued_events: int
    queued_bytes: int
    behind_bytes: int  # in the tailed files, not yet read into the channel
    collectors_up: int
    collectors: int


class Progress:
    """Successive readings -> progress lines (rates over the interval, ETA from the recent rate)."""

    def __init__(self, first: Reading):
        self.start = self.last = first

    def line(self, r: Reading, *, eta: bool) -> str:
        dt = max(1e-9, r.now - self.last.now)
        ev_rate = (r.events_acked - self.last.events_acked) / dt
        b_rate = (r.bytes_acked - self.last.bytes_acked) / dt
        self.last = r
        text = (f"shipped {r.events_acked - self.start.events_acked} events "
                f"({human_bytes(r.bytes_acked - self.start.bytes_acked)} with headers), "
                f"{ev_rate:.0f} events/s ({human_bytes(b_rate)}/s); queued {r.queued_events} events "
                f"({human_bytes(r.queued_bytes)}); files behind by {human_bytes(r.behind_bytes)}; "
                f"collectors up {r.collectors_up}/{r.collectors}")
        if eta:
            left = r.queued_bytes + r.behind_bytes
            if left == 0:
                text += "; done"
            elif b_rate > 0:
                text += f"; about {human_seconds(left / b_rate)} left"
            else:
                text += "; no progress: time left unknown"
        return text


class TerminalLine:
    """One status line redrawn in place on a terminal's stderr; log lines are printed above it."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._shown = False
        self._handler_filter = _ClearFirst(self)

    @staticmethod
    def wanted(stream=None) -> bool:
        s = stream or sys.stderr
        return hasattr(s, "isatty") and s.isatty()

    def show(self, text: str) -> None:
        with self._lock:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._shown = True

    def clear(self) -> None:
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def attach(self) -> None:
        """Clear the line before every log record, so log lines never land after it."""
        for h in logging.getLogger().handlers:
            h.addFilter(self._handler_filter)

    def detach(self) -> None:
        self.clear()
        for h in logging.getLogger().handlers:
            h.removeFilter(self._handler_filter)


class _ClearFirst(logging.Filter):
    def __init__(self, line: TerminalLine):
        super().__init__()
        self.line = line

    def filter(self, record: logging.LogRecord) -> bool:
        self.line.clear()
        return True
