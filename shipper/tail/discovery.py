"""Discovery's view of the file system: directory listings reused while a directory is unchanged.

A rescan is the safety net under inotify (and the only mechanism where inotify sees nothing, as on
NFS). With tens of thousands of quiet files, listing every directory and stat'ing every file each
``rescan_interval`` was the agent's main idle cost. Two facts make most of it unnecessary:

* A directory's mtime changes whenever a name in it is created, removed or renamed. While it is
  unchanged, the names in it, and the inode each name points to, are the ones listed last time.
  :class:`DirCache` keeps the last listing of each directory with the mtime it had, and reuses it
  while the mtime is the same, unless the listing was taken within :data:`RACY_SECONDS` of that
  mtime (a change in the same clock tick would not move it, the "racy" case git knows for its
  index) or is older than :data:`MAX_AGE` (a directory on a server whose clock is off).
* Growth of a closed file is what the rescan's stat looks for, and inotify reports it as it
  happens. While notifications work, :class:`StatRotation` stats only a slice of the known files
  per rescan, so each is still checked about once a minute as the safety net; without them, every
  file is stat'ed on every rescan as before.

What ``shipper.tail.source`` does with the result (identity, rotation, new files) is unchanged: this
module only decides how much of the file system must be looked at again to know the same things.
"""

from __future__ import annotations

import os
import time

from shipper.tail.globs import Listing, list_dir

RACY_SECONDS = 2.0  # a listing taken this soon after the directory's mtime is not trusted
MAX_AGE = 60.0  # a listing is taken afresh at least this often


class DirCache:
    """Directory listings keyed by path, reused while the directory's mtime stands still."""

    def __init__(self) -> None:
        self._listings: dict[str, tuple[int, float, Listing]] = {}  # path -> (mtime_ns, listed at, entries)
        self._reused: set[str] = set()
        self._listed: set[str] = set()

    def begin(self) -> None:
        """Start a scan: :meth:`unchanged` answers for the directories listed from here on."""
        self._reused.clear()
        self._listed.clear()

    def list(self, path: str) -> Listing:
        """The entries of directory ``path``; ``OSError`` if it cannot be listed."""
        if path in self._listed or path in self._reused:
            return self._listings[path][2]
        st = os.stat(path)
        now = time.time()
        cached = self._listings.get(path)
        if (cached is not None and cached[0] == st.st_mtime_ns and now - cached[1] < MAX_AGE
                and cached[1] - st.st_mtime_ns / 1e9 > RACY_SECONDS):
            self._reused.add(path)
            return cached[2]
        try:
            entries = list_dir(path)
        except OSError:
            self._listings.pop(path, None)
            raise
        self._listings[path] = (st.st_mtime_ns, now, entries)
        self._listed.add(path)
        return entries

    def unchanged(self, path: str) -> bool:
        """Was ``path`` listed in this scan from a listing that is still true?"""
        return path in self._reused

    def forget(self, keep: set[str]) -> None:
        """Drop the listings of directories not in ``keep`` (no longer looked at)."""
        for path in [p for p in self._listings if p not in keep]:
            del self._listings[path]


class StatRotation:
    """Which known files to stat in this rescan: each file once every ``every`` rescans."""

    def __init__(self, every: int = 12) -> None:
        self.every = every
        self._turn = 0

    def begin(self) -> None:
        self._turn = (self._turn + 1) % self.every

    def due(self, order: int) -> bool:
        """Is the file with this tracking number due for a stat in this rescan?"""
        return order % self.every == self._turn
