"""One malloc arena for the agent's threads (glibc), set before they start.

Measured (docs/benchmarks.md, issue 17): the sink's helper thread takes leases (allocating each
~1 MB payload in its own glibc arena) and the sending thread frees them, while the tail thread
allocates its batches in a third. glibc's per-thread arenas then keep trimming and regrowing
their heaps: ``tail --once`` of 300,000 ~1 KiB lines took 432,000 minor page faults and 1.9 s of
system time, against 68,000 and 1.0 s with a single arena, which also lowered the peak RSS
(60.6 -> 57.4 MiB). Our threads hold the GIL while they allocate, so one arena costs no
contention that the GIL does not already impose.

``mallopt(M_ARENA_MAX, 1)`` only affects arenas created afterwards, so the agent calls
:func:`one_arena` before it starts any thread. Anything but glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("flume-ship.agent")

M_ARENA_MAX = -8  # glibc's malloc.h


def one_arena() -> bool:
    """Ask glibc for a single malloc arena; True if it agreed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, 1) == 1
    log.debug("malloc: one arena %s", "set" if ok else "refused")
    return ok
