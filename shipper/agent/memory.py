"""One malloc arena for the agent's threads (glibc), set before they start.

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

``mallopt`` is looked up among the symbols the interpreter already has (``dlopen(NULL)``), not
with ``ctypes.util.find_library``, which runs ``ldconfig -p`` in a child process on every start
(~5 ms of a cron ``--once`` run's wall time).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("flume-ship.agent")

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 1


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``, as ``MALLOC_ARENA_MAX`` would; True if glibc agreed."""
    if "MALLOC_ARENA_MAX" in os.environ or not _glibc():
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # libc is already loaded into the interpreter
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, arenas) == 1
    log.debug("malloc: at most %d arena(s) %s", arenas, "set" if ok else "refused")
    return ok


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # not glibc: the name is unknown there
        return False
