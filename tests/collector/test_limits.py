"""The collector's limit pieces on their own: allow-list, admission, memory budget, rate-limited log."""

from __future__ import annotations

import logging

import pytest

from shipper.collector.limits import (
    CHARGE_FACTOR,
    Admission,
    Allowance,
    AllowList,
    MemoryBudget,
    RateLimitedLog,
)
from shipper.errors import LimitRefused


def test_allow_list_matches_networks_and_ipv4_mapped_addresses():
    allow = AllowList(AllowList.parse(["10.0.0.0/8, 192.168.1.7", "fd00::/8"]))
    assert allow.allows("10.1.2.3") and allow.allows("192.168.1.7") and allow.allows("::ffff:10.9.9.9")
    assert allow.allows("fd12::1")
    assert not allow.allows("192.168.1.8") and not allow.allows("127.0.0.1") and not allow.allows("not an ip")
    assert AllowList(()).allows("203.0.113.5")  # no list: everyone
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        AllowList.parse(["10.0.0.0/33"])


def test_admission_refuses_past_the_maximum_or_waits_for_one_to_leave():
    import threading

    a = Admission(2)
    a.enter()
    a.enter()
    with pytest.raises(LimitRefused) as err:
        a.enter()
    assert err.value.reason == "connections"
    with pytest.raises(LimitRefused):
        a.enter(wait=0.05)  # nobody leaves
    leaving = threading.Timer(0.05, a.leave)
    leaving.start()
    a.enter(wait=30)  # admitted as soon as one left
    leaving.join()
    assert a.open == 2


def test_allowances_share_one_budget_and_give_it_back():
    budget = MemoryBudget(100)
    one, two = Allowance(budget), Allowance(budget)
    one.charge(30)
    assert budget.used == 30 * CHARGE_FACTOR
    with pytest.raises(LimitRefused) as err:
        two.charge(30)
    assert err.value.reason == "memory" and budget.used == 60 and two.held == 0
    two.charge(20)
    one.charge(5)  # shrinking gives back at once
    assert budget.used == (20 + 5) * CHARGE_FACTOR
    assert one.room() == (budget.free() + one.held) // CHARGE_FACTOR
    one.release()
    two.release()
    assert budget.used == 0
    assert (one.peak, two.peak) == (30 * CHARGE_FACTOR, 20 * CHARGE_FACTOR)  # (refused charges not counted)


def test_rate_limited_log_says_how_many_lines_it_left_out(caplog, monkeypatch):
    import shipper.collector.limits as limits

    clock = [0.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock[0])
    rlog = RateLimitedLog(logging.getLogger("t"), interval=10.0)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            rlog.log(logging.WARNING, "k", "refused %d", i)
        rlog.log(logging.WARNING, "other", "another reason")
        clock[0] = 10.5
        rlog.log(logging.WARNING, "k", "refused %d", 9)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "another reason", "refused 9 (4 more like this in the last 10 s not logged)"]
