"""Fixtures for the interop suite: real Apache Flume JVMs next to real ``flume-ship`` processes.

* ``flume_classpath`` (session): ``get(version) -> classpath``, resolving Flume with Maven on first
  use. A resolution failure fails the test with Maven's own output; nothing here skips.
* ``tls`` (session): one keytool-made identity in every shape the peers need (see ``flume.Tls``).
* ``start_agent`` (function): starts an agent from a property mapping, killed at teardown.
* On a failing test, the tail of every Flume JVM still running (and its log path) is added to the
  report, so a red case shows what Flume said.
"""

from __future__ import annotations

import pytest

from tests.interop import flume


@pytest.fixture(scope="session")
def flume_classpath():
    cache: dict[str, str] = {}

    def get(version: str) -> str:
        if version not in cache:
            try:
                cache[version] = flume.resolve(version)
            except flume.ResolutionError as err:
                pytest.fail(str(err), pytrace=False)
        return cache[version]

    return get


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    return flume.Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_agent(flume_classpath, tmp_path):
    started: list[flume.Agent] = []

    def start(version: str, props: dict, name: str = "a1") -> flume.Agent:
        agent = flume.Agent(flume_classpath(version), tmp_path / f"flume-{version}-{name}", props, name, version)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for jvm in list(flume.LIVE):
            rep.sections.append((f"{jvm.label} ({jvm.log_path})", jvm.log_tail(120)))
