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

import errno
import os
import stat
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, Container, Mapping, NamedTuple

from shipper.tail.globs import Expansion, Listing, expand, list_dir
from shipper.tail.identity import COMPRESSED_SUFFIXES, ROTATED_SUFFIX_SEPARATORS, Record, file_key
from shipper.tail.selection import Selection

RACY_SECONDS = 2.0  # a listing taken this soon after the directory's mtime is not trusted
MAX_AGE = 60.0  # a listing is taken afresh at least this often


class DirCache:
    """Directory listings keyed by path, reused while the directory's mtime stands still.

    A listing nobody read in a scan (its directory was only checked with :meth:`fresh`, as the
    scanner does for a glob whose expansion it reuses) loses its names at :meth:`slim`: only
    the stamp that says the directory is unchanged is kept, and the names are read again should
    anyone ask for them. 50,000 names are then held once, as the paths of the tracked files.
    """

    def __init__(self) -> None:
        # path -> (mtime_ns, listed at, entries or None once slimmed)
        self._listings: dict[str, tuple[int, float, Listing | None]] = {}
        self._reused: set[str] = set()
        self._listed: set[str] = set()
        self._read: set[str] = set()  # listings whose names were asked for in this scan

    def begin(self) -> None:
        """Start a scan: :meth:`unchanged` answers for the directories listed from here on."""
        self._reused.clear()
        self._listed.clear()
        self._read.clear()

    def _trusted(self, path: str, st: os.stat_result, now: float) -> bool:
        cached = self._listings.get(path)
        return (cached is not None and cached[0] == st.st_mtime_ns and now - cached[1] < MAX_AGE
                and cached[1] - st.st_mtime_ns / 1e9 > RACY_SECONDS)

    def fresh(self, path: str) -> bool:
        """Is ``path`` unchanged since its last listing? (a stat; its names are not needed)."""
        if path in self._listed or path in self._reused:
            return path in self._reused
        try:
            st = os.stat(path)
        except OSError:
            return False
        if self._trusted(path, st, time.time()):
            self._reused.add(path)
            return True
        return False

    def list(self, path: str) -> Listing:
        """The entries of directory ``path``; ``OSError`` if it cannot be listed."""
        self._read.add(path)
        cached = self._listings.get(path)
        if (path in self._listed or path in self._reused) and cached is not None and cached[2] is not None:
            return cached[2]
        if path in self._reused:
            st, now, trusted = None, cached[1], True  # checked in this scan; only the names are wanted
        else:
            st = os.stat(path)
            now = time.time()
            trusted = self._trusted(path, st, now)
            if trusted and cached[2] is not None:
                self._reused.add(path)
                return cached[2]
        try:
            entries = list_dir(path)
        except OSError:
            self._listings.pop(path, None)
            self._reused.discard(path)
            raise
        if trusted:
            # Unchanged, but its names were given up: read again, still the same listing.
            self._listings[path] = (cached[0], cached[1], entries)
            self._reused.add(path)
        else:
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

    def slim(self) -> None:
        """Give up the names of the listings nobody read in this scan (their stamps stay)."""
        for path, (mtime_ns, listed_at, entries) in self._listings.items():
            if entries is not None and path not in self._read:
                self._listings[path] = (mtime_ns, listed_at, None)


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


class Seen(NamedTuple):
    """What discovery keeps of a stat: a tenth of an ``os.stat_result``'s memory, same names."""

    st_dev: int
    st_ino: int
    st_size: int
    st_mtime: float

    @classmethod
    def of(cls, st: os.stat_result) -> "Seen":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime)


def rotation_base(name: str, bases: Container[str]) -> str | None:
    """The tracked name ``name`` is a rotation of, if any (app.log.1 -> app.log)."""
    if name.lower().endswith(COMPRESSED_SUFFIXES):
        return None
    for i, ch in enumerate(name):
        if ch in ROTATED_SUFFIX_SEPARATORS and i and name[:i] in bases:
            return name[:i]
    return None


class _NamesIn:
    """``name in names``: is ``prefix + name`` a family's name or a glob candidate? (what
    :func:`rotation_base` needs of the names in one directory)."""

    __slots__ = ("prefix", "families", "globbed")

    def __init__(self, prefix: str, families: Mapping[str, float], globbed: set[str]) -> None:
        self.prefix, self.families, self.globbed = prefix, families, globbed

    def __contains__(self, name: str) -> bool:
        path = self.prefix + name
        return path in self.families or path in self.globbed


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _what(pattern: str, path: str, why: str) -> str:
    return why if path == pattern else f"matches {path}, which {why}"


@dataclass(slots=True)
class Scan:
    """What one scan saw. ``cands``: file key -> (path, what a stat said, or None for a known file
    in an unchanged directory not due for a stat, whether a glob matched it); ``unchanged``: keys of
    tracked files seen where they were, in directories that did not change (not due for a stat, not
    gone): nothing to do for them, and no tuple each; ``rotation_origin``:
    for unknown rotation-named files, the name they look like a rotation of; ``family_mtime``: per
    family (origin), the newest mtime known before the scan (filled only when something unknown was
    seen); ``errors``: what could not be looked at (the scan is then incomplete); ``unmatched``: per
    pattern, why it matched no regular file (None when it did)."""

    cands: dict[str, tuple[str, Seen | None, bool]]
    unchanged: set[str]
    rotation_origin: dict[str, str]
    family_mtime: dict[str, float]
    errors: list[OSError]
    unmatched: dict[str, str | None]  # per pattern: None if it matched a file, else what it named


class Scanner:
    """Finds the files the globs match and those lying next to tracked files under rotation names.

    It observes the file system and decides nothing about identity: ``shipper.tail.source`` judges
    every candidate (adopt a stored record, follow a rename, start a new file, skip a copy)."""

    def __init__(self, patterns: list[str], select: Selection) -> None:
        self.patterns = patterns
        self.select = select
        self.dirs = DirCache()
        self.rotation = StatRotation()
        self._expansions: dict[str, Expansion] = {}  # pattern -> its last expansion, if listings decided it

    def reset(self) -> None:
        """Forget every listing (after the tail source forgot its state)."""
        self.dirs = DirCache()
        self._expansions = {}

    def _expand(self, pattern: str) -> Expansion:
        """The pattern's paths: the last expansion again while every directory it listed is unchanged
        (the same path strings, so a rescan of 50,000 quiet files builds no new ones), else afresh."""
        dirs = self.dirs
        last = self._expansions.get(pattern)
        if last is not None and all([dirs.fresh(d) for d in last.listed]):
            return last
        found = expand(pattern, dirs.list)
        # Not when it listed nothing: a missing directory on the way is no listing to watch.
        if found.by_listings and found.listed and not found.errors:
            self._expansions[pattern] = found
        else:
            self._expansions.pop(pattern, None)
        return found

    def scan(self, files: Mapping[str, Any], by_path: Mapping[str, str], records: Mapping[str, Record], *,
             watched: bool) -> Scan:
        """One look. ``files``: the tracked files (``path``, ``origin``, ``parent``, ``order``, ``dev``,
        ``ino``, ``size``, ``mtime``, ``fd``, ``gone``, ``deleted``); ``by_path``: path -> key of a
        tracked file; ``records``: stored records not tracked yet; ``watched``: inotify reports
        growth, so known files in unchanged directories are stat'ed only in their turn."""
        dirs = self.dirs
        dirs.begin()
        # While notifications work, a known file in an unchanged directory is stat'ed only in its
        # turn (shipper.tail.discovery); growth of closed files reaches us through inotify.
        rotation = self.rotation
        rotation.begin()
        trust_dirs = watched
        # (path, stat or None when unchanged and not looked at, matched by a glob)
        cands: dict[str, tuple[str, Seen | None, bool]] = {}
        # A scan that could not look everywhere (a listing or stat failed for want of a descriptor,
        # a permission, a stale handle) is incomplete: what it did not see is not gone.
        errors: list[OSError] = []
        unmatched: dict[str, str | None] = {}
        unchanged: set[str] = set()
        for pat in self.patterns:
            found = self._expand(pat)
            errors += found.errors
            other = None  # what the pattern named when it matched no regular file
            hits = 0
            for p in found.paths:
                key = by_path.get(p)
                if key is not None and trust_dirs:
                    f = files[key]
                    if dirs.unchanged(f.parent) and not rotation.due(f.order):
                        if f.gone or key in cands:
                            cands.setdefault(key, (p, None, True))
                        else:
                            unchanged.add(key)
                        hits += 1
                        continue
                if p.lower().endswith(COMPRESSED_SUFFIXES) or self.select.excluded(p):
                    other = other or _what(pat, p, "is compressed or excluded")
                    continue
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    errors.append(exc)
                    other = _what(pat, p, f"cannot be looked at ({exc.strerror or exc})")
                    continue
                if stat.S_ISREG(st.st_mode):
                    hits += 1
                    if key is not None and key not in cands:
                        f = files[key]
                        if (f.ino == st.st_ino and f.dev == st.st_dev and not f.gone
                                and (f.fd is not None or (f.size == st.st_size and f.mtime == st.st_mtime))):
                            unchanged.add(key)  # where it was, as it was: nothing to judge
                            continue
                    cands.setdefault(file_key(st.st_dev, st.st_ino), (p, Seen.of(st), True))
                else:
                    other = other or _what(pat, p, f"is {_kind(st.st_mode)}, not a regular file")
            unmatched[pat] = None if hits else (other or "matches no file")

        # Directories to look in for rotations: those of the families and of what the globs found.
        # An unchanged directory holds nothing new; only the others are read entry by entry.
        looked: set[str] = set()
        for f in files.values():
            looked.add(f.parent)
            if f.path != f.origin:
                looked.add(os.path.dirname(f.origin))
        for r in records.values():
            looked.add(os.path.dirname(r.path))
            looked.add(os.path.dirname(r.origin))
        for path, st, _ in cands.values():
            if st is not None:
                looked.add(os.path.dirname(path))
        listings: dict[str, Listing] = {}
        for d in looked:
            if dirs.fresh(d):
                continue  # unchanged: nothing new in it, and its names are not needed
            try:
                entries = dirs.list(d)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    errors.append(exc)
                continue
            if not dirs.unchanged(d):
                listings[d] = entries
        # Families as they stood before this scan: origin -> newest mtime we know for it. Needed
        # only to judge files we do not track yet (new, or found in a changed directory).
        family_mtime: dict[str, float] = {}
        if listings or records or any(key not in files for key in cands):
            for item in chain(files.values(), records.values()):
                if family_mtime.get(item.origin, -1.0) < item.mtime:
                    family_mtime[item.origin] = item.mtime
        if listings:
            known_inodes = {f.ino for f in files.values()} | {r.ino for r in records.values()}
            globbed = {c[0] for c in cands.values()}
        rotation_origin: dict[str, str] = {}  # path -> origin, for unknown rotation-named files
        for d, listing in listings.items():
            prefix = d if d.endswith(os.sep) else d + os.sep
            # The names in ``d`` that rotated files are named after: the families' and the glob
            # candidates'. Looked up by full path, not gathered into a set of 50,000 new names.
            bs = _NamesIn(prefix, family_mtime, globbed)
            for name, ino in zip(listing.names, listing.inos):
                path = prefix + name
                if path in globbed or by_path.get(path) in unchanged:
                    continue  # matched by a glob, or tracked and seen unchanged where it is
                try:
                    # The name is judged even when the inode is known: a known inode number is
                    # only a guess until the record's identity check passes (inodes are reused),
                    # and a file whose record fails it is judged by its name like any other.
                    base = rotation_base(name, bs)
                    if base is None and ino not in known_inodes:
                        continue
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    errors.append(exc)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                key = file_key(st.st_dev, st.st_ino)
                if key not in cands:
                    cands[key] = (path, Seen.of(st), False)
                    if base is not None:
                        rotation_origin[path] = os.path.join(d, base)
        # Files known under a name in an unchanged directory are still there under that name.
        for f in files.values():
            if (f.key not in cands and f.key not in unchanged and not f.gone and not f.deleted
                    and dirs.unchanged(f.parent)):
                unchanged.add(f.key)
        unchanged.difference_update(cands)  # a key a later pattern or listing put among the candidates
        for found in self._expansions.values():
            looked.update(found.listed)
        dirs.forget(looked)
        dirs.slim()
        return Scan(cands, unchanged, rotation_origin, family_mtime, errors, unmatched)
