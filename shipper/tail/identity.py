"""File identity: which stored offset belongs to which file, and when a file is no longer itself.

A file is keyed by device and inode (``file:<dev>:<ino>``), which survive a rename, so a rotated
file keeps its offset under any new name. An inode alone is not enough: the kernel reuses it as
soon as a file is deleted, and a file can be truncated or rewritten in place under the same inode.
So each record also carries a **fingerprint**: a BLAKE2b hash of the file's first ``fp_len``
bytes, where ``fp_len`` is how much of the head we have read, capped at :data:`FP_MAX`. A small
file is read at once (the fingerprint covers whatever is there and grows with it, up to the cap),
unlike schemes that wait for 1 KiB or a first full line before reading anything.

A stored record matches the file found under its key only if (:func:`judge`):

* the file is not shorter than the stored offset, nor than the last size seen (a file that
  shrank was truncated, even if it has grown again since); else ``TRUNCATED``;
* its first ``fp_len`` bytes still hash to the fingerprint; else ``REWRITTEN`` (inode reuse, or
  an in-place rewrite).

Either verdict starts a new **generation**: reading restarts at 0 and the generation id (random,
stored in the record) changes, so event ids (``<generation>:<offset>``) never repeat for
different content. What this cannot see: a rewrite that keeps the first ``fp_len`` bytes and
never shrinks below what we saw (docs/tail.md).

Record layout (the value stored in the channel's offsets table, compact JSON, UTF-8)::

    {"v": 1, "dev": int, "ino": int, "gen": str, "path": str, "origin": str,
     "offset": int, "fp": hex str, "fp_len": int, "size": int, "mtime": float}

``path`` is where the file was last seen, ``origin`` the name it is tailed as (the name before any
rotation), ``offset`` the first byte not yet shipped (always at a line boundary), ``size`` and
``mtime`` what the last stat said.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, fields

try:  # hashlib's own blake2b; importing hashlib itself would load OpenSSL (~3 ms a start) for nothing
    from _blake2 import blake2b
except ImportError:  # an interpreter without the module: hashlib's
    from hashlib import blake2b

FP_MAX = 1024  # bytes of the head the fingerprint covers, at most
KEY_PREFIX = "file:"
RECORD_VERSION = 1


def file_key(dev: int, ino: int) -> str:
    return f"{KEY_PREFIX}{dev}:{ino}"


def fingerprint(head: bytes) -> str:
    return blake2b(head, digest_size=8).hexdigest()


def new_generation() -> str:
    return os.urandom(6).hex()  # secrets.token_hex(6), without importing hmac (and OpenSSL)


def read_head(fd: int, n: int) -> bytes:
    """The first ``n`` bytes of an open file (fewer if it is shorter)."""
    if n <= 0:
        return b""
    return os.pread(fd, n, 0)


class Verdict(enum.Enum):
    SAME = "same"
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten"


def judge(*, offset: int, last_size: int, fp: str, fp_len: int, size: int, head: bytes) -> Verdict:
    """Is the file (now ``size`` bytes, starting with ``head``) still the one a record describes?

    ``head`` must be the file's first ``fp_len`` bytes (fewer if the file is shorter).
    """
    if size < offset or size < last_size:
        return Verdict.TRUNCATED
    if len(head) < fp_len or fingerprint(head[:fp_len]) != fp:
        return Verdict.REWRITTEN
    return Verdict.SAME


@dataclass(slots=True)
class Record:
    """One file's committed state: what the channel's offsets table holds under :attr:`key`."""

    dev: int
    ino: int
    gen: str
    path: str
    origin: str
    offset: int
    fp: str
    fp_len: int
    size: int
    mtime: float

    @property
    def key(self) -> str:
        return file_key(self.dev, self.ino)

    def encode(self) -> bytes:
        # Every field is a scalar: read them directly (asdict deep-copies; this runs every put).
        d = {"v": RECORD_VERSION}
        for name in _RECORD_FIELDS:
            d[name] = getattr(self, name)
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> "Record":
        """Parse a stored record; ``ValueError`` if it is not one this version understands."""
        d = json.loads(data.decode("utf-8"))
        if not isinstance(d, dict) or d.pop("v", None) != RECORD_VERSION:
            raise ValueError("unknown record version")
        try:
            rec = cls(**d)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        if rec.offset < 0 or rec.fp_len < 0 or rec.fp_len > FP_MAX:
            raise ValueError("offset or fingerprint length out of range")
        return rec


_RECORD_FIELDS = tuple(f.name for f in fields(Record))

ROTATED_SUFFIX_SEPARATORS = (".", "-", "_")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".z", ".br")


def is_rotation_of(name: str, base: str) -> bool:
    """Does ``name`` look like a rotated copy of ``base`` (app.log.1, app.log-20240101, app.log_old)?

    Compressed rotations are excluded: their bytes are not the log's bytes.
    """
    if len(name) <= len(base) or not name.startswith(base):
        return False
    if name[len(base)] not in ROTATED_SUFFIX_SEPARATORS:
        return False
    return not name.lower().endswith(COMPRESSED_SUFFIXES)
