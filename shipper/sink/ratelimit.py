"""Rate limits: events (lines) per second and bytes per second, as back-pressure, never loss.

A :class:`RateLimit` is a token bucket per unit (events, bytes) that may go into debt: ``acquire``
takes the whole batch at once, however big, and then waits until the bucket is back to zero
before returning. So a batch is never cut or dropped, the caller simply does not take (a sink)
or read (a source) the next one until the average rate is back under the limit. The bucket starts
full and holds ``burst`` seconds of the rate (1 s by default: an idle spell does not turn into an
unlimited spurt), so a window of W seconds passes at most rate × (W + burst) plus one batch.

Used by the tail source's channel view (``[sources.NAME] max_lines_per_second`` and
``max_bytes_per_second``: a backlog catch-up does not flood shared collectors) and by a group's
sink workers (``max_events_per_second``, ``max_bytes_per_second``: shared by the group's
workers). The clock and the wait are injectable, so tests need no real time.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimit:
    """Limits of ``per_second`` events and ``bytes_per_second`` bytes (0: no limit on that unit)."""

    def __init__(self, per_second: float = 0, bytes_per_second: float = 0, burst: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.rates = (float(per_second), float(bytes_per_second))
        self.burst = burst
        self.clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._level = [r * burst for r in self.rates]  # tokens in each bucket (negative: debt)
        self._at = now
        self.waited = 0.0  # total seconds callers were held back (status)

    @property
    def active(self) -> bool:
        return any(self.rates)

    def reserve(self, events: int, nbytes: int) -> float:
        """Take the tokens now; return how long the caller must wait before going on."""
        with self._lock:
            now = self.clock()
            elapsed, self._at = max(0.0, now - self._at), now
            wait = 0.0
            for i, (rate, amount) in enumerate(zip(self.rates, (events, nbytes))):
                if not rate:
                    continue
                level = min(rate * self.burst, self._level[i] + elapsed * rate) - amount
                self._level[i] = level
                if level < 0:
                    wait = max(wait, -level / rate)
            self.waited += wait
            return wait

    def acquire(self, events: int, nbytes: int, stop: threading.Event | None = None) -> None:
        """Reserve, then wait (cut short when ``stop`` is set: a stopping agent does not wait)."""
        wait = self.reserve(events, nbytes)
        if wait > 0:
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)


def limit_of(per_second: float, bytes_per_second: float) -> RateLimit | None:
    return RateLimit(per_second, bytes_per_second) if per_second or bytes_per_second else None
