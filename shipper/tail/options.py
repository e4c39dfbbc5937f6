"""Typed options of the tail source, and the per-file status it reports.

Options are validated once, here, so the source never meets a nonsensical value; a bad value
raises :class:`shipper.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from shipper.errors import ConfigError
from shipper.tail.rules import Rules

MiB = 1024 * 1024

LONG_LINE_POLICIES = ("split", "truncate")


@dataclass(frozen=True)
class TailOptions:
    """What to tail and how. Sizes are bytes, times are seconds."""

    paths: list[str]
    from_end: bool = False  # files present at the first scan with no stored offset start at their end
    max_line_bytes: int = 2 * MiB  # a longer line is split (or truncated) and counted
    long_lines: str = "split"  # "split": every byte is shipped in pieces; "truncate": the rest is dropped
    partial_line_timeout: float = 5.0  # an incomplete last line idle this long is shipped as it is
    rescan_interval: float = 5.0  # glob and directory rescan: the safety net under watchdog
    read_chunk: int = 256 * 1024  # one pread
    max_bytes_per_file_turn: int = 4 * MiB  # fairness: a busy file yields after this much
    batch_max_events: int = 2000  # one channel transaction holds at most this many events...
    batch_max_bytes: int = 2 * MiB  # ...and about this many body bytes
    close_inactive: float = 60.0  # close the descriptor of a file unchanged this long (reopened on change)
    rotate_wait: float = 5.0  # keep a rotated file open this long after its last growth
    headers: Mapping[str, str] = field(default_factory=dict)  # static --header K=V
    add_timestamp: bool = True  # "timestamp": ms since the epoch when the line was read
    add_host: bool = True  # "host": this machine's name
    add_file: bool = True  # "file": the path the file is tailed as (its name before rotation)
    add_event_id: bool = False  # "id": "<generation>:<byte offset>", stable across re-reads
    host: str | None = None  # overrides the host name
    watch: bool = True  # use watchdog (inotify); False relies on rescans alone
    put_timeout: float = 0.5  # how long one put may block before the stop flag is checked again
    max_open_files: int = 0  # descriptors for tailed files (0: the open-file limit less a reserve)
    # Events, not lines (shipper.tail.rules / shipper.tail.events), and Flume-compatible headers.
    rules: Rules = field(default_factory=Rules)  # multiline, include/exclude, extraction, event time
    file_key: str = "file"  # header keys (Flume: fileHeaderKey, hostHeader, headerName)
    host_key: str = "host"
    timestamp_key: str = "timestamp"
    byte_offset_header: bool = False  # "byteoffset": the event's first byte in the file (Flume's byteOffsetHeader)
    uuid_header: str | None = None  # a random UUID per event under this key (Flume's UUID interceptor)
    exclude: tuple[str, ...] = ()  # globs of files not to take (shipper.tail.selection)
    ignore_older: float = 0.0  # a new file unmodified this long is taken from its end (0: off)
    encoding: str | None = None  # the files' encoding, shipped as UTF-8 (None: bytes as they are)

    def __post_init__(self) -> None:
        if not self.paths:
            raise ConfigError("tail: give at least one path or glob")
        if self.long_lines not in LONG_LINE_POLICIES:
            raise ConfigError(f"tail: long_lines must be one of {', '.join(LONG_LINE_POLICIES)}")
        for name in ("max_line_bytes", "read_chunk", "max_bytes_per_file_turn", "batch_max_events",
                     "batch_max_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tail: {name} must be at least 1")
        if self.max_open_files < 0:
            raise ConfigError("tail: max_open_files must not be negative (0: automatic)")
        for name in ("partial_line_timeout", "rescan_interval", "close_inactive", "rotate_wait",
                     "put_timeout", "ignore_older"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tail: {name} must not be negative")
        if self.encoding is not None:
            from shipper.tail.decode import check_encoding

            check_encoding(self.encoding)
        own = self.own_headers()
        for key in self.headers:
            if key in own:
                raise ConfigError(f"tail: header {key!r} is set by the source itself")
        for name in ("file_key", "host_key", "timestamp_key"):
            if not getattr(self, name):
                raise ConfigError(f"tail: {name} must not be empty")

    def own_headers(self) -> set[str]:
        """The header keys the source itself may set."""
        own = {self.timestamp_key, self.host_key, self.file_key, "id", "split", "truncated"}
        if self.byte_offset_header:
            own.add("byteoffset")
        if self.uuid_header:
            own.add(self.uuid_header)
        return own


@dataclass(frozen=True, slots=True)
class FileStatus:
    """One tailed file, as `flume-ship status` shows it."""

    path: str  # where the file is now
    origin: str  # the name it is tailed as (differs after rotation)
    identity: str  # the offset record's key: "file:<dev>:<inode>"
    generation: str  # changes on truncation, in-place rewrite or inode reuse
    offset: int  # bytes consumed into events (committed or about to be)
    size: int  # size at the last look
    state: str  # reading, idle, waiting (for a descriptor), rotated, deleted, unreadable

    @property
    def behind(self) -> int:
        return max(0, self.size - self.offset)


@dataclass(frozen=True, slots=True)
class FilesSummary:
    """A source's files for `status`: counts over all of them, rows for the ones worth a look."""

    total: int
    by_state: dict[str, int]
    bytes_behind: int
    rows: list[FileStatus]  # behind first, then the most recently active; at most the limit asked


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: Any) -> int:
    """4096, "64K", "500M", "1G", "1GiB", "2MB" (binary units) -> bytes; ValueError saying why."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 4096, \"64K\" or \"1G\"")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a size like 4096, \"64K\" or \"1G\", not {value!r}")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", value.upper())
    if not m:
        raise ValueError(f"{value!r} is not a size (examples: 4096, 64K, 500M, 1G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
