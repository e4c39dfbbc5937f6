"""Reliability suite options and the end-of-session report.

* ``--soak``: every scenario runs longer (more rounds, more lines, longer faults) for local use; the
  default quick profile is what CI runs.
* ``--reliability-report PATH``: where the table is written (default
  ``.pytest_cache/reliability-report.txt`` under the rootdir). The same table is printed at the end
  of the session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import harness


def pytest_addoption(parser):
    group = parser.getgroup("reliability")
    group.addoption("--soak", action="store_true", default=False,
                    help="reliability suite: run each scenario longer (local use)")
    group.addoption("--reliability-report", default=None,
                    help="reliability suite: write the scenario table to this file")


@pytest.fixture(scope="session")
def soak(request) -> bool:
    return request.config.getoption("--soak", default=False)


@pytest.fixture(scope="session")
def scale(soak) -> int:
    """How much longer a scenario runs under --soak (rounds, lines, fault durations)."""
    return 10 if soak else 1


@pytest.fixture
def cleanup():
    """Things to stop at teardown, in reverse order (processes first, then mounts)."""
    stack: list = []
    yield stack
    for fn in reversed(stack):
        try:
            fn()
        except Exception:
            pass


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not harness.REPORT:
        return
    table = harness.format_report(harness.REPORT)
    profile = "soak" if config.getoption("--soak", default=False) else "quick"
    terminalreporter.section(f"reliability scenarios ({profile} profile)")
    terminalreporter.write_line(table)
    path = config.getoption("--reliability-report", default=None)
    path = Path(path) if path else Path(config.rootpath) / ".pytest_cache" / "reliability-report.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"reliability scenarios ({profile} profile)\n{table}\n")
    terminalreporter.write_line(f"(written to {path})")
