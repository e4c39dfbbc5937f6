"""The agent asks glibc for one malloc arena before its threads start (shipper/agent/memory.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_one_arena_setting_in_a_fresh_process():
    code = "from shipper.agent.memory import one_arena; print(one_arena())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
