"""Pure delivery decisions: whether to retry, when, and which collector next.

Nothing here does I/O or reads a clock on its own; every function that needs the time is given
``now`` (monotonic seconds), so the rules are tested without sleeping.

*Whether* to retry is a property of the error (``retriable`` on the exception class, see
``shipper.errors``): a refused connection, a timeout, a FAILED or UNKNOWN Status, a system error or
garbage from the collector are all retriable; a bug in our own code is not.

*Which* collector: a Flume-style penalty box. A collector that fails is skipped for
``min(max_penalty, 2 ** consecutive_failures)`` seconds (2 s, 4 s, 8 s, ... then the cap) and tried
again after; one success clears its record. A collector that is alive but busy (it answered FAILED
or with an error: the error's ``busy`` attribute) is skipped for
``min(busy_penalty, 0.5 * 2 ** (consecutive_failures - 1))`` (0.5 s, 1 s, 2 s, 4 s, then the cap, 5 s
by default: Flume's own sink runner backs off at most 5 s), since it will take events again as soon
as its channel drains; an unreachable one keeps the long penalty. Among the collectors not in the box, ``failover`` takes
them in the listed order (the first healthy one gets all the traffic), ``round_robin`` starts one
further round the list on every batch, ``random`` shuffles them.

*When*: if another collector is eligible, the next attempt goes there at once. If every collector
is in the box, the sink waits for an exponential backoff with full jitter (tenacity's
``wait_random_exponential``), capped, and then tries the collector whose penalty ends first; so a
single collector that comes back is used again within the backoff cap, never abandoned.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from shipper.errors import ShipperError


class Balance(str, Enum):
    FAILOVER = "failover"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"


def is_retriable(exc: BaseException) -> bool:
    """Retry errors that say so; anything else (a bug, a KeyboardInterrupt) ends the attempt loop."""
    return isinstance(exc, ShipperError) and exc.retriable


@dataclass
class CollectorHealth:
    """What the penalty box knows about one collector."""

    failures: int = 0  # consecutive failures; 0 = healthy
    penalty_until: float = 0.0  # monotonic time before which the collector is skipped
    total_failures: int = 0
    last_success: float | None = None
    last_error: str | None = None
    busy: bool = False  # the last failure was a busy answer, not an unreachable collector

    def penalty(self, max_penalty: float, busy_penalty: float = 5.0) -> float:
        if not self.failures:
            return 0.0
        if self.busy:
            return min(busy_penalty, 0.5 * float(2**min(self.failures - 1, 62)))
        return min(max_penalty, float(2**min(self.failures, 62)))


@dataclass
class Selector:
    """Orders collectors for the next batch, honouring the penalty box and the balance mode."""

    count: int
    balance: Balance = Balance.FAILOVER
    max_penalty: float = 30.0
    busy_penalty: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    health: list[CollectorHealth] = field(init=False)
    _next_start: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("at least one collector is needed")
        self.health = [CollectorHealth() for _ in range(self.count)]

    def eligible(self, now: float) -> list[int]:
        """Collectors not in the penalty box, in the order the balance mode wants them tried."""
        ready = [i for i, h in enumerate(self.health) if h.penalty_until <= now]
        if self.balance is Balance.ROUND_ROBIN and ready:
            start = self._next_start % self.count
            ready.sort(key=lambda i: (i - start) % self.count)
        elif self.balance is Balance.RANDOM:
            self.rng.shuffle(ready)
        return ready

    def choose(self, now: float, exclude: frozenset[int] = frozenset()) -> int:
        """The collector for the next attempt.

        Eligible collectors not yet tried for this batch come first; if there are none, the one
        whose penalty ends soonest (the caller has already waited its backoff).
        """
        for i in self.eligible(now):
            if i not in exclude:
                if self.balance is Balance.ROUND_ROBIN:
                    self._next_start = i + 1
                return i
        return min(range(self.count), key=lambda i: (self.health[i].penalty_until, i))

    def next_is_busy(self) -> bool:
        """The collector tried next, once every one is in the box, is only busy (a short wait)."""
        i = min(range(self.count), key=lambda i: (self.health[i].penalty_until, i))
        return self.health[i].busy

    def has_untried_eligible(self, now: float, tried: frozenset[int]) -> bool:
        return any(i not in tried for i in self.eligible(now))

    def record_success(self, i: int, now: float) -> int:
        """Clear collector ``i``'s record; returns how many failures in a row it had."""
        h = self.health[i]
        had = h.failures
        h.failures = 0
        h.busy = False
        h.penalty_until = 0.0
        h.last_success = now
        return had

    def record_failure(self, i: int, now: float, error: str, busy: bool = False) -> float:
        """Put collector ``i`` in the box (briefly when ``busy``); returns the penalty in seconds."""
        h = self.health[i]
        h.failures += 1
        h.total_failures += 1
        h.last_error = error
        h.busy = busy
        pen = h.penalty(self.max_penalty, self.busy_penalty)
        h.penalty_until = now + pen
        return pen
