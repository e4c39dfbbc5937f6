"""The pure delivery rules: penalty box, balance modes, retriable errors."""

import random

import pytest

from shipper import errors
from shipper.sink.policy import Balance, Selector, is_retriable


def test_penalty_doubles_per_consecutive_failure_up_to_the_cap():
    sel = Selector(1, max_penalty=30.0)
    penalties = [sel.record_failure(0, now=100.0, error="refused") for _ in range(7)]
    assert penalties == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_failed_collector_is_skipped_until_its_penalty_ends():
    sel = Selector(2)
    sel.record_failure(0, now=10.0, error="refused")
    assert sel.eligible(10.0) == [1]
    assert sel.eligible(11.9) == [1]
    assert sel.eligible(12.0) == [0, 1]


def test_success_clears_the_record_and_reports_the_streak():
    sel = Selector(1)
    sel.record_failure(0, 0.0, "x")
    sel.record_failure(0, 1.0, "x")
    assert sel.record_success(0, 2.0) == 2
    assert sel.health[0].failures == 0 and sel.eligible(2.0) == [0]
    assert sel.record_failure(0, 3.0, "x") == 2.0  # the doubling starts over


def test_failover_sends_everything_to_the_first_healthy_collector():
    sel = Selector(3, Balance.FAILOVER)
    assert [sel.choose(0.0) for _ in range(4)] == [0, 0, 0, 0]
    sel.record_failure(0, 0.0, "down")
    assert sel.choose(0.5) == 1
    assert sel.choose(2.5) == 0  # back in order once the penalty ends


def test_round_robin_spreads_batches_over_healthy_collectors():
    sel = Selector(3, Balance.ROUND_ROBIN)
    assert [sel.choose(0.0) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    sel.record_failure(1, 0.0, "down")
    picks = [sel.choose(1.0) for _ in range(4)]
    assert 1 not in picks and set(picks) == {0, 2}


def test_random_uses_every_healthy_collector():
    sel = Selector(3, Balance.RANDOM, rng=random.Random(7))
    assert {sel.choose(0.0) for _ in range(60)} == {0, 1, 2}


def test_untried_eligible_collector_is_preferred_within_one_batch():
    sel = Selector(2)
    assert sel.choose(0.0, exclude=frozenset({0})) == 1
    assert sel.has_untried_eligible(0.0, frozenset({0}))
    assert not sel.has_untried_eligible(0.0, frozenset({0, 1}))


def test_when_all_are_penalized_the_one_released_first_is_chosen():
    sel = Selector(3)
    sel.record_failure(0, 0.0, "x")
    sel.record_failure(0, 0.0, "x")  # penalty 4 s, until 4.0
    sel.record_failure(1, 1.0, "x")  # until 3.0
    sel.record_failure(2, 0.5, "x")  # until 2.5
    assert sel.eligible(1.0) == []
    assert sel.choose(1.0) == 2


@pytest.mark.parametrize(
    "exc, expected",
    [
        (errors.TransportError("refused"), True),
        (errors.ConnectTimeout("slow"), True),
        (errors.RequestTimeout("Handshake timed out"), True),
        (errors.CollectorRejected("FAILED"), True),
        (errors.PeerProtocolError("garbage"), True),
        (errors.ConfigError("bad flag"), False),
        (ValueError("a bug"), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_whether_to_retry_is_decided_by_the_error_type(exc, expected):
    assert is_retriable(exc) is expected
