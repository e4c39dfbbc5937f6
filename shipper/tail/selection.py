"""Which matched files a source takes: ``exclude`` globs and ``ignore_older``. Pure; no file access.

* ``exclude``: shell globs (``fnmatch``). A pattern with a ``/`` is matched against the file's
  absolute path (``~`` expanded), one without against its name only: ``"*.gz"``,
  ``"debug-*.log"``, ``"/var/log/app/archive/*"``. An excluded file is never picked up by the
  glob; a tracked file that is rotated to an excluded name is still finished (rotation follows
  the file, not its name).
* ``ignore_older`` (seconds, 0 = off): a file seen for the first time whose last modification is
  older than this is taken from its end, as Filebeat does for such files: its old content is not
  shipped, lines appended later are. A file with a stored offset is not affected.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Selection:
    exclude: tuple[str, ...] = ()
    ignore_older: float = 0.0

    def excluded(self, path: str) -> bool:
        if not self.exclude:
            return False
        name = os.path.basename(path)
        for pat in self.exclude:
            if "/" in pat:
                if fnmatch.fnmatchcase(path, os.path.abspath(os.path.expanduser(pat))):
                    return True
            elif fnmatch.fnmatchcase(name, pat):
                return True
        return False

    def too_old(self, mtime: float, now: float) -> bool:
        return self.ignore_older > 0 and now - mtime > self.ignore_older
