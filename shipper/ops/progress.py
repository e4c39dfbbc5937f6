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

``flume-ship send`` shows the same kind of line for its one file (:class:`FileSendProgress`):
lines and bytes acknowledged, the rate, what is in flight, how far the file is behind, the time
left; redrawn on a terminal, logged every ``--progress-interval`` seconds off one.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` with the noun that agrees: ``1 event``, ``2 events``, ``1 batch``, ``0 batches``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


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
        text = (f"shipped {counted(r.events_acked - self.start.events_acked, 'event')} "
                f"({human_bytes(r.bytes_acked - self.start.bytes_acked)} with headers), "
                f"{ev_rate:.0f} events/s ({human_bytes(b_rate)}/s); queued {counted(r.queued_events, 'event')} "
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

    def finish(self, text: str) -> None:
        """Draw ``text`` one last time and end the line, so it stays on the screen."""
        with self._lock:
            self.stream.write("\r\x1b[K" + text + "\n")
            self.stream.flush()
            self._shown = False

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


class FileSendProgress:
    """``flume-ship send``'s progress: lines read from one file and acknowledged, the rate, what is
    in flight, how far the file is behind and (when its size is known) the time left; the same
    line on a terminal (redrawn) and in the log (every ``interval`` seconds) as ``tail --once``.

    The sender calls :meth:`batch_read` for each batch's worth of raw lines it reads (counted in
    plain locals per line: a lock per line would cost more than encoding the event) and
    :meth:`acked` as each batch is acknowledged; a thread (:meth:`start`) draws or logs the line, so a stalled collector still
    shows (rate 0, "no progress") instead of silence. Bytes are the file's (newlines included).
    """

    def __init__(self, label: str, size: int | None, batch_size: int, *, clock, interval: float,
                 terminal: "TerminalLine | None", log: logging.Logger):
        self.label, self.size, self.batch_size = label, size, batch_size
        self._clock, self.interval, self.terminal, self.log = clock, interval, terminal, log
        self._lock = threading.Lock()
        self.read_lines = self.read_bytes = self.acked_lines = self.acked_bytes = 0
        self._batches: list[tuple[int, int]] = []  # (lines, bytes) of batches read, oldest first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = self._last = (clock(), 0, 0)

    # --- the sender's side ---------------------------------------------------------------

    def batch_read(self, lines: int, nbytes: int) -> None:
        with self._lock:
            self.read_lines += lines
            self.read_bytes += nbytes
            self._batches.append((lines, nbytes))

    def acked(self, n: int) -> None:
        with self._lock:
            while n > 0 and self._batches:
                lines, nbytes = self._batches[0]
                take = min(n, lines)
                part = nbytes if take == lines else nbytes * take // lines
                self.acked_lines += take
                self.acked_bytes += part
                n -= take
                if take == lines:
                    self._batches.pop(0)
                else:
                    self._batches[0] = (lines - take, nbytes - part)

    # --- the display ---------------------------------------------------------------------

    def line(self) -> str:
        now = self._clock()
        with self._lock:
            lines, nbytes = self.acked_lines, self.acked_bytes
            flight = self.read_lines - lines
        t0, _, _ = self._start
        t1, l1, b1 = self._last
        self._last = (now, lines, nbytes)
        dt = max(1e-9, now - t1)
        l_rate, b_rate = (lines - l1) / dt, (nbytes - b1) / dt
        text = (f"{self.label}: sent {lines} lines ({human_bytes(nbytes)}), {l_rate:.0f} lines/s "
                f"({human_bytes(b_rate)}/s); {flight} in flight")
        if self.size is None:
            return text + "; size unknown: time left unknown"
        behind = max(0, self.size - nbytes)
        text += f"; file behind by {human_bytes(behind)}"
        if behind == 0:
            return text + "; done"
        overall = nbytes / max(1e-9, now - t0)
        rate = b_rate or overall
        return text + (f"; about {human_seconds(behind / rate)} left" if rate > 0 else
                       "; no progress: time left unknown")

    def _run(self) -> None:
        period = 1.0 if self.terminal is not None else self.interval
        while not self._stop.wait(period):
            text = self.line()
            if self.terminal is not None:
                self.terminal.show(text)
            else:
                self.log.info("progress: %s", text)

    def start(self) -> None:
        if self.terminal is None and self.interval <= 0:
            return
        if self.terminal is not None:
            self.terminal.attach()
        self._thread = threading.Thread(target=self._run, name="send-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop drawing; on a terminal, leave the final line in place (the result, not a blank).
        Only the first call does anything."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.terminal is not None:
            self.terminal.finish(self.line())
            self.terminal.detach()
