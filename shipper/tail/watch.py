"""Wake-ups from watchdog (inotify): which directories to watch, and the observer.

One watch per glob's static prefix directory (recursive when the wildcard is not in the last
component), never one per file: watchdog starts a thread and an inotify instance per watch, and
the per-user inotify instance limit is small (128 by default). Files found later in those
directories, and rotated files next to tracked ones, are covered by the same watch. The callback
only records what happened and wakes the source; events can be missed or coalesced, so the
source's periodic rescan stays the safety net. When the observer cannot start or a directory
cannot be watched (limits), a warning is logged and the caller rescans every
:data:`NO_WATCH_RESCAN` seconds instead.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable

log = logging.getLogger("flume-ship.tail")

NO_WATCH_RESCAN = 1.0  # rescan interval when notifications are unavailable
MAX_WATCHES = 64
_WILDCARDS = set("*?[")


def watch_dirs(patterns: Iterable[str]) -> dict[str, bool]:
    """Directory -> recursive?, for the static prefix of each (absolute) pattern."""
    out: dict[str, bool] = {}
    for pat in patterns:
        parts = pat.split(os.sep)
        first = next((i for i, p in enumerate(parts) if _WILDCARDS & set(p)), None)
        if first is None or first == len(parts) - 1:
            d, recursive = os.path.dirname(pat), False
        else:
            d, recursive = os.sep.join(parts[:first]) or os.sep, True
        out[d] = out.get(d, False) or recursive
    # A directory under a recursively watched one needs no watch of its own.
    rec = [d for d, r in out.items() if r]
    return {d: r for d, r in out.items()
            if not any(d != p and d.startswith(p.rstrip(os.sep) + os.sep) for p in rec)}


def start_watching(patterns: list[str], notify: Callable[[str, str, str], None]):
    """Start an observer calling ``notify(kind, src_path, dest_path)``; (observer or None, complete?)."""
    try:
        from watchdog.events import (
            DirCreatedEvent, DirMovedEvent, FileAttribEvent, FileCreatedEvent,
            FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileSystemEventHandler,
        )
        from watchdog.observers import Observer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        log.warning("tail: file notifications unavailable (%s); rescanning every %gs", exc, NO_WATCH_RESCAN)
        return None, False

    class Handler(FileSystemEventHandler):
        def dispatch(self, event):  # watchdog's hook, on its thread
            src = event.src_path if isinstance(event.src_path, str) else os.fsdecode(event.src_path)
            dest = getattr(event, "dest_path", "") or ""
            notify(event.event_type, src, dest if isinstance(dest, str) else os.fsdecode(dest))

    # Not opened/closed: our own reads would wake us.
    filt = [FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent,
            FileAttribEvent, DirCreatedEvent, DirMovedEvent]
    dirs = watch_dirs(patterns)
    observer = Observer()
    try:
        observer.start()
    except OSError as exc:
        log.warning("tail: file notifications unavailable (%s); rescanning every %gs", exc, NO_WATCH_RESCAN)
        return None, False
    ok = 0
    for d, recursive in list(dirs.items())[:MAX_WATCHES]:
        if not os.path.isdir(d):
            continue
        try:
            observer.schedule(Handler(), d, recursive=recursive, event_filter=filt)
            ok += 1
        except OSError as exc:
            log.warning("tail: cannot watch %s (%s); rescanning every %gs instead", d, exc, NO_WATCH_RESCAN)
            return observer, False
    if len(dirs) > MAX_WATCHES:
        log.warning("tail: %d directories to watch; notifications cover the first %d, the rest are "
                    "rescanned", len(dirs), MAX_WATCHES)
        return observer, False
    return observer, ok == len(dirs)
