"""Property: any TOML value under any declared key is either refused with a message or runs.

Random values (NaN, infinities, huge and negative numbers, strings where lists belong, nested
tables, ...) go through the loader that `validate`, `tail` and a SIGHUP reload share. A refusal is
a ConfigFileError whose every problem names its key; an acceptance must build every part the agent
builds from a configuration (tail options and rules, sink and client options, collector addresses,
the penalty box, socket and wait timeouts) without an exception.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.agent.config import SECTIONS, SourceSection, build, Overlay
from shipper.errors import ConfigFileError
from shipper.sink.policy import Balance, Selector

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["4K", "1G", "999999999999T", "-1", "failover", "random", "none", "deflate", "java",
                     "127.0.0.1:4141", "127.0.0.1:0", "thrift://h:1", "[::1]:9", "utf-8", "latin-1"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def typed(f: dataclasses.Field):
    """Mostly values of the key's own type (so many configurations are accepted and must run),
    sometimes anything."""
    t, kind = str(f.type), f.metadata.get("kind")
    if kind == "size":
        own = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(["4K", "1G", "999999999T"]))
    elif t == "float":
        own = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70))
    elif t == "int":
        own = st.integers(min_value=-(2**70), max_value=2**70)
    elif t == "bool":
        own = st.booleans()
    elif t.startswith("tuple"):
        own = st.one_of(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3), st.text(max_size=8))
    elif f.metadata.get("choices"):
        own = st.sampled_from(list(f.metadata["choices"]))
    else:
        own = scalars
    return st.one_of(own, own, own, values)


def edits_of(cls):
    fields = [f for f in dataclasses.fields(cls) if f.name not in ("name", "collectors", "paths")]
    return st.fixed_dictionaries({}, optional={f.name: typed(f) for f in fields}).map(
        lambda d: dict(list(d.items())[:3]))


section_edits = st.sampled_from(sorted(SECTIONS)).flatmap(lambda sec: edits_of(SECTIONS[sec]).map(lambda d: (sec, d)))
source_edits = edits_of(SourceSection)


def runs(cfg) -> None:
    """Build what the agent builds from a configuration; any exception here is a bug."""
    cfg.sink_options()
    cfg.client_options()
    addresses = cfg.addresses()
    d = cfg.delivery
    Selector(len(addresses), Balance(d.balance), d.max_penalty).record_failure(0, 0.0, "x")
    for s in cfg.sources:
        s.tail_options()
    with socket.socket() as sock:
        sock.settimeout(d.connect_timeout)
        sock.settimeout(d.request_timeout)
    ev = threading.Event()
    for seconds in (cfg.agent.drain_timeout, cfg.agent.stall_timeout, cfg.agent.status_interval, d.linger,
                    d.backoff_max, d.max_penalty, d.busy_penalty):
        assert math.isfinite(seconds)
        ev.wait(min(seconds, 0.0))  # the type and range a wait accepts; no sleeping in a test
        assert seconds <= threading.TIMEOUT_MAX


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(section_edits, max_size=3), source=source_edits)
def test_random_values_are_refused_with_a_message_or_run(edits, source):
    raw = {"delivery": {"collectors": ["127.0.0.1:4141"]}, "sources": {"app": {"paths": ["/var/log/app.log"]}}}
    for sec, table in edits:
        raw.setdefault(sec, {}).update(table)
    raw["sources"]["app"].update(source)
    try:
        cfg = build(raw, "random.toml", Overlay())
    except ConfigFileError as err:
        lines = err.lines()
        assert lines and all(line.startswith("random.toml: ") and len(line.split(": ", 2)) == 3 for line in lines), lines
        return
    runs(cfg)
