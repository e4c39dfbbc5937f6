"""One malloc arena for the agent's threads, and big buffers from the heap (glibc), set before they start.

Measured (docs/benchmarks.md, issue 17): the sink's helper thread takes leases (allocating each
~1 MB payload in its own glibc arena) and the sending thread frees them, while the tail thread
allocates its batches in a third. glibc's per-thread arenas (up to eight per CPU) then keep
trimming and regrowing their heaps and each keeps the memory freed in it: ``tail --once`` of
300,000 ~1 KiB lines took 432,000 minor page faults and 1.9 s of system time, against 68,000 and
1.0 s with a single arena, which also lowered the peak RSS (60.6 -> 57.4 MiB); a 1 GB backlog
drain peaked ~2 MiB lower. Our threads hold the GIL while they allocate, so one arena costs no
contention that the GIL does not already impose.

``mallopt(M_ARENA_MAX, n)`` only affects arenas created afterwards, so the agent calls
:func:`limit_malloc_arenas` before it starts any thread. A ``MALLOC_ARENA_MAX`` set by the user
wins; anything but glibc (musl, macOS): nothing to do.

Big buffers (issue 17, measured on ``tail --once`` of 300,000 ~1 KiB lines, three runs each):
a chunk's joined payload (~1 MB), its compressed body and a lease's decompressed payload are
allocated and freed for every chunk. glibc served them with fresh ``mmap``s or regrew a trimmed
heap for them, so every 4 KiB of every buffer was a page fault and a zeroed page: 110,000-154,000
minor faults and 0.67-0.96 s of system time per run. With the mmap and trim thresholds at 8 MiB
(``MMAP_THRESHOLD``; what ``collect`` uses too) the freed buffers are reused from the heap: 10,000-
27,000 faults, 0.46-0.54 s of system time, ~1.5 CPU s less per million events, the same peak RSS
(52 MiB). Free memory above 8 MiB at the top of the heap is still given back. A
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` set by the user wins.

``mallopt`` is looked up among the symbols the interpreter already has (``dlopen(NULL)``), not
with ``ctypes.util.find_library``, which runs ``ldconfig -p`` in a child process on every start
(~5 ms of a cron ``--once`` run's wall time).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("flume-ship.agent")

M_ARENA_MAX = -8  # glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
ARENAS = 1
MMAP_THRESHOLD = 8 * 1024 * 1024  # and the trim threshold: see the module docstring


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``, as ``MALLOC_ARENA_MAX`` would, and keep big buffers
    in the heap (:func:`keep_big_buffers`); True if glibc agreed to the arenas."""
    if not _glibc():
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    keep_big_buffers(mallopt)
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    ok = mallopt(M_ARENA_MAX, arenas) == 1
    log.debug("malloc: at most %d arena(s) %s", arenas, "set" if ok else "refused")
    return ok


def keep_big_buffers(mallopt=None) -> bool:
    """glibc's mmap and trim thresholds at ``MMAP_THRESHOLD``, unless the user set either; True if set."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if ("MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
            or "mmap_threshold" in tunables or "trim_threshold" in tunables):
        return False
    mallopt = mallopt or (_mallopt() if _glibc() else None)
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD) == 1
    log.debug("malloc: mmap and trim thresholds at %d bytes %s", MMAP_THRESHOLD, "set" if ok else "refused")
    return ok


def _mallopt():
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # libc is already loaded into the interpreter
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not glibc: the name is unknown there
        return False
