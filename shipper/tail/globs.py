"""Glob expansion that says when it could not look: a failed listing is not an empty directory.

:func:`glob.iglob` swallows every ``OSError`` of the directories it lists, so a listing that fails
for want of a descriptor (EMFILE, ENFILE), for a permission (EACCES) or for a stale NFS handle
(ESTALE) looks exactly like a directory whose files were all deleted. The tail source used to take
that answer at its word and forget the offsets of every file it did not see. :func:`expand` walks
the pattern itself and returns, next to the paths it found, the errors it met; the caller treats a
scan with errors as incomplete and forgets nothing on its evidence (``shipper.tail.source``).

Matching follows :mod:`glob` with ``recursive=True``: ``*``, ``?`` and ``[...]`` within one path
component, ``**`` as a whole component for zero or more directories, names starting with a dot
matched only by a pattern component that starts with a dot. Two departures: ``**`` follows links
to directories but never into one of its own ancestors (a link loop cannot make a scan endless),
and a pattern that names an existing file literally (``app[1].log``) is that file, not a
character class.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from array import array
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

_MAGIC = re.compile(r"[*?\[]")
# A missing or non-directory component: nothing there to match, which is an answer, not an error.
ABSENT = (errno.ENOENT, errno.ENOTDIR)


class Listing(NamedTuple):
    """A directory's entries, compact: 50,000 names cost little more than the names themselves."""

    names: list[str]
    dirs: frozenset[str]  # the names that are directories (following links)
    inos: array  # inode number of each name, in the same order


# Lists a directory; raises OSError. ``shipper.tail.discovery.DirCache.list`` reuses unchanged listings.
Lister = Callable[[str], Listing]


def list_dir(path: str) -> Listing:
    """A directory's entries (the uncached lister)."""
    names: list[str] = []
    dirs: list[str] = []
    inos = array("Q")
    with os.scandir(path) as it:
        for e in it:
            names.append(e.name)
            inos.append(e.inode())
            try:
                if e.is_dir():
                    dirs.append(e.name)
            except OSError:
                pass
    return Listing(names, frozenset(dirs), inos)


@dataclass(slots=True)
class Expansion:
    paths: list[str] = field(default_factory=list)
    errors: list[OSError] = field(default_factory=list)  # listings that failed: the scan is incomplete
    # The directories listed, and whether the listings alone decided the result: no ``**`` and no
    # literal name looked up inside a directory that a wildcard chose. Then, while none of those
    # directories changed, the same pattern gives the same paths (shipper.tail.discovery reuses them).
    listed: list[str] = field(default_factory=list)
    by_listings: bool = True


_EMPTY = Listing([], frozenset(), array("Q"))


def has_magic(pattern: str) -> bool:
    return _MAGIC.search(pattern) is not None


def expand(pattern: str, lister: Lister = list_dir) -> Expansion:
    """Every existing path matching the absolute ``pattern``, and the listing errors met on the way."""
    out = Expansion()
    if not has_magic(pattern) or os.path.lexists(pattern):
        out.by_listings = False
        if os.path.lexists(pattern):
            out.paths.append(pattern)
        return out
    parts = pattern.split(os.sep)
    root = os.sep if pattern.startswith(os.sep) else os.curdir
    parts = parts[1:] if pattern.startswith(os.sep) else parts
    first_magic = next(i for i, p in enumerate(parts) if has_magic(p))
    _Walk(lister, out, len(parts) - first_magic).walk(root, parts)
    return out


class _Walk:
    def __init__(self, lister: Lister, out: Expansion, after_magic: int) -> None:
        self.lister = lister
        self.out = out
        self.after_magic = after_magic  # parts left when the first wildcard component is reached

    def listdir(self, path: str) -> Listing:
        self.out.listed.append(path)
        try:
            return self.lister(path)
        except OSError as exc:
            if exc.errno not in ABSENT:
                self.out.errors.append(exc)
            return _EMPTY

    def walk(self, base: str, parts: list[str]) -> None:
        out = self.out
        if not parts:
            out.paths.append(base)
            return
        part, rest = parts[0], parts[1:]
        if part == "":  # a doubled separator
            self.walk(base, rest)
        elif part == "**":
            out.by_listings = False  # below() stats directories: not decided by listings alone
            if not rest:  # a last "**" matches everything below, files included
                out.paths.extend(self.below(base, dirs_only=False))
                return
            self.walk(base, rest)  # zero directories
            for sub in self.below(base, dirs_only=True):
                self.walk(sub, rest)
        elif not has_magic(part):
            if len(parts) < self.after_magic:
                out.by_listings = False  # a name looked up in a directory a wildcard chose
            path = os.path.join(base, part)
            if rest:
                if self.stat_is_dir(path):
                    self.walk(path, rest)
            elif os.path.lexists(path):
                out.paths.append(path)
        else:
            match = re.compile(fnmatch.translate(part)).match
            hidden_ok = part.startswith(".")
            prefix = base if base.endswith(os.sep) else base + os.sep
            listing = self.listdir(base)
            for name in listing.names:
                if (name[0] == "." and not hidden_ok) or not match(name):
                    continue
                if not rest:
                    out.paths.append(prefix + name)
                elif name in listing.dirs:
                    self.walk(prefix + name, rest)

    def below(self, base: str, *, dirs_only: bool, seen: frozenset = frozenset()):
        """What is below ``base`` (skipping hidden names), depth first, never into its own ancestors."""
        prefix = base if base.endswith(os.sep) else base + os.sep
        listing = self.listdir(base)
        for name in listing.names:
            if name.startswith("."):
                continue
            is_dir = name in listing.dirs
            path = prefix + name
            if is_dir:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue  # a link back up the tree
            if is_dir or not dirs_only:
                yield path
            if is_dir:
                yield from self.below(path, dirs_only=dirs_only, seen=seen | {(st.st_dev, st.st_ino)})

    def stat_is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as exc:
            if exc.errno not in ABSENT:
                self.out.errors.append(exc)
            return False
