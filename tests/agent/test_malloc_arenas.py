"""The agent caps glibc's malloc arenas at one before its threads start, unless MALLOC_ARENA_MAX is set.

Counted by glibc itself: ``malloc_stats()`` prints one "Arena N:" block per arena to stderr. A
child process starts eight threads that each allocate outside Python's small-object allocator
(glibc gives each new thread an arena of its own, up to eight per CPU); with the cap there is one,
without it more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import ctypes, sys, threading
    sys.path.insert(0, {root!r})
    from shipper.agent.memory import limit_malloc_arenas
    capped = limit_malloc_arenas() if sys.argv[1] == "cap" else False
    held, ready, go = [], threading.Barrier(9), threading.Event()
    def work():
        held.append([bytearray(4096) for _ in range(64)])  # beyond pymalloc: glibc's malloc
        ready.wait()
        go.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    ready.wait()
    libc = ctypes.CDLL(None)
    sys.stderr.flush()
    libc.malloc_stats()
    go.set()
    for t in threads:
        t.join()
    print(capped)
""")


def arenas(mode: str, env: dict) -> tuple[int, str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=root), mode], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr.count("Arena "), out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_threads_share_one_malloc_arena_unless_the_user_set_malloc_arena_max():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    n_free, capped = arenas("none", env)
    if n_free == 0:
        pytest.skip("not glibc: no malloc_stats arenas to count")
    n_capped, capped = arenas("cap", env)
    assert capped == "True" and n_capped == 1 < n_free
    n_user, capped = arenas("cap", {**env, "MALLOC_ARENA_MAX": "4"})
    assert capped == "False" and 2 < n_user <= 4
