"""Run a real flume-ship to which file permissions apply, even when the suite runs as root.

Root reads any file through two capabilities, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. When the
suite runs as root, :func:`unprivileged` gives a ``preexec_fn`` that drops both from the child's
capability bounding set (``prctl(PR_CAPBSET_DROP)``) before it executes flume-ship, so the new
program never gets them back: it is still uid 0 and owns the files it made, but a file with mode
000 is as unreadable to it as to anyone. For an ordinary user nothing needs to change (None).
"""

from __future__ import annotations

import ctypes
import os

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def unprivileged():
    """A ``preexec_fn`` for subprocess that takes root's permission bypass away; None when not root."""
    if os.geteuid() != 0:
        return None

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop
