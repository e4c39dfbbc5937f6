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


FAULTS = textwrap.dedent("""
    import resource, sys, zlib
    sys.path.insert(0, {root!r})
    from shipper.agent.memory import keep_big_buffers
    kept = keep_big_buffers() if sys.argv[1] == "keep" else False
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(100):  # chunks' lives: ~1 MB payloads, smaller bodies, a lease's payload, all freed
        held = [bytes([i & 0xFF]) * (1 << 20) for _ in range(3)]
        held += [h[: 1 << 19] for h in held]
        [zlib.crc32(h) for h in held]
        del held
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def faults(mode: str, env: dict) -> tuple[str, int]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", FAULTS.format(root=root), mode], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    kept, n = out.stdout.split()
    return kept, int(n)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_chunk_sized_buffers_are_reused_not_faulted_in_again_unless_the_user_tuned_malloc():
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        pytest.skip("not glibc")
    _, free = faults("none", env)
    kept, n = faults("keep", env)
    assert kept == "True" and n < 5_000 < free  # ~600 MB made and freed: ~50,000+ faults without
    kept, _ = faults("keep", {**env, "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert kept == "False"
