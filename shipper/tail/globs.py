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
from dataclasses import dataclass, field

_MAGIC = re.compile(r"[*?\[]")
# A missing or non-directory component: nothing there to match, which is an answer, not an error.
_ABSENT = (errno.ENOENT, errno.ENOTDIR)


@dataclass(slots=True)
class Expansion:
    paths: list[str] = field(default_factory=list)
    errors: list[OSError] = field(default_factory=list)  # listings that failed: the scan is incomplete


def has_magic(pattern: str) -> bool:
    return _MAGIC.search(pattern) is not None


def expand(pattern: str) -> Expansion:
    """Every existing path matching the absolute ``pattern``, and the listing errors met on the way."""
    out = Expansion()
    if not has_magic(pattern) or os.path.lexists(pattern):
        if os.path.lexists(pattern):
            out.paths.append(pattern)
        return out
    parts = pattern.split(os.sep)
    root = os.sep if pattern.startswith(os.sep) else os.curdir
    _walk(root, parts[1:] if pattern.startswith(os.sep) else parts, out)
    return out


def _listdir(path: str, out: Expansion) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as exc:
        if exc.errno not in _ABSENT:
            out.errors.append(exc)
        return []


def _walk(base: str, parts: list[str], out: Expansion) -> None:
    if not parts:
        out.paths.append(base)
        return
    part, rest = parts[0], parts[1:]
    if part == "":  # a doubled separator
        _walk(base, rest, out)
    elif part == "**":
        if not rest:  # a last "**" matches everything below, files included
            out.paths.extend(_below(base, out, dirs_only=False))
            return
        _walk(base, rest, out)  # zero directories
        for sub in _below(base, out, dirs_only=True):
            _walk(sub, rest, out)
    elif not has_magic(part):
        path = os.path.join(base, part)
        if rest:
            if _stat_is_dir(path, out):
                _walk(path, rest, out)
        elif os.path.lexists(path):
            out.paths.append(path)
    else:
        hidden_ok = part.startswith(".")
        for e in _listdir(base, out):
            if e.name.startswith(".") and not hidden_ok:
                continue
            if not fnmatch.fnmatchcase(e.name, part):
                continue
            if not rest:
                out.paths.append(e.path)
            elif _is_dir(e, out, follow=True):
                _walk(e.path, rest, out)


def _below(base: str, out: Expansion, *, dirs_only: bool, seen: frozenset = frozenset()):
    """What is below ``base`` (skipping hidden names), depth first, never into its own ancestors."""
    for e in _listdir(base, out):
        if e.name.startswith("."):
            continue
        is_dir = _is_dir(e, out, follow=True)
        if is_dir:
            try:
                st = e.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue  # a link back up the tree
        if is_dir or not dirs_only:
            yield e.path
        if is_dir:
            yield from _below(e.path, out, dirs_only=dirs_only, seen=seen | {(st.st_dev, st.st_ino)})


def _stat_is_dir(path: str, out: Expansion) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as exc:
        if exc.errno not in _ABSENT:
            out.errors.append(exc)
        return False


def _is_dir(e: os.DirEntry, out: Expansion, *, follow: bool) -> bool:
    try:
        return e.is_dir(follow_symlinks=follow)
    except OSError as exc:
        if exc.errno not in _ABSENT:
            out.errors.append(exc)
        return False
