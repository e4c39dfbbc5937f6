"""The token bucket behind rate limits, on a clock the test moves (no real time)."""

from shipper.sink.ratelimit import RateLimit


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def simulate(limit: RateLimit, clock: Clock, batches: int, events: int, nbytes: int) -> float:
    """A caller that sends back to back, waiting as told: the seconds it took."""
    start = clock.now
    for _ in range(batches):
        clock.now += limit.reserve(events, nbytes)
    return clock.now - start


def test_a_backlog_is_held_to_the_line_rate():
    clock = Clock()
    limit = RateLimit(per_second=1000, clock=clock)
    took = simulate(limit, clock, batches=300, events=100, nbytes=10_000)  # 30,000 lines
    assert 29.0 <= took <= 30.0  # 1,000 lines/s, the first second's burst up front


def test_the_byte_rate_binds_when_it_is_the_tighter_one():
    clock = Clock()
    limit = RateLimit(per_second=1000, bytes_per_second=50_000, clock=clock)
    took = simulate(limit, clock, batches=100, events=10, nbytes=10_000)  # 1 MB at 50 kB/s
    assert 19.0 <= took <= 20.0


def test_a_batch_bigger_than_the_burst_is_taken_whole_and_paid_for_after():
    clock = Clock()
    limit = RateLimit(per_second=10, clock=clock)
    assert limit.reserve(50, 0) == 4.0  # 10 in the bucket, 40 of debt at 10/s
    clock.now += 4.0
    assert limit.reserve(1, 0) == 0.1


def test_idle_time_does_not_bank_more_than_the_burst():
    clock = Clock()
    limit = RateLimit(per_second=100, clock=clock)
    clock.now += 3600
    assert limit.reserve(100, 0) == 0.0
    assert limit.reserve(100, 0) == 1.0


def test_no_limit_never_waits():
    clock = Clock()
    limit = RateLimit(clock=clock)
    assert not limit.active and limit.reserve(10**9, 10**12) == 0.0
