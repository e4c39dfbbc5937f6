"""The agent's configuration: typed dataclasses, read from TOML, overridden by command-line flags.

Theory of operation
-------------------
One TOML file (``--config``, default ``/etc/flume-ship/flume-ship.toml`` when it exists) holds every
option of ``flume-ship tail``. Its shape::

    [agent]      drain_timeout, metrics_listen, stall_timeout, status_interval, max_open_files
    [channel]    state_dir, capacity, min_free
    [delivery]   collectors = ["host:port", ...], batching, balance, timeouts, compression, TLS
    [sources.NAME]   paths = [globs], headers = {k = "v"}, per-source tailing options (one or more)

Loading is two steps. :func:`load_raw` parses the file into plain dicts (``tomllib``); the command
line then lays its flags over that dict (:func:`overlay`), remembering which keys came from which
flag; :func:`build` turns the result into a frozen :class:`Config`, checking every key. Every problem
found is collected (not just the first) as a :class:`Problem` ``(where, key, why)``, where ``where``
is the file or the flag, and raised together as one :class:`ConfigFileError` (exit 2). Unknown keys
are errors: a typo must not silently fall back to a default.

Sources and offsets: each ``[sources.NAME]`` becomes its own tail source sharing the one channel.
Their offset records are kept apart by a per-source prefix (see ``shipper.agent.core``), except for the
source named ``default``, which is what the command line's PATHS make: renaming a source therefore
starts its files afresh. Two sources that match the same file would ship it twice, so
:func:`check_overlaps` refuses identical patterns and any file that two sources match right now.

The field metadata (``help``, ``flag``, ``kind``) is the single description of each option: the
reference page docs/configuration.md is generated from it (:func:`reference_markdown`), and a test
fails when the two drift apart.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from shipper.errors import ConfigError, ConfigFileError, Problem
from shipper.tail.options import parse_size  # sizes are written the same in the file, flags and rules

DEFAULT_CONFIG = "/etc/flume-ship/flume-ship.toml"
DEFAULT_SOURCE = "default"  # the source the command line's PATHS make; its offset keys have no prefix
SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_INT = 2**31 - 1  # counts and ports: beyond this a value is a typo, and SQLite or a socket would choke
MAX_ACK_SYNC = 60.0  # channel.ack_sync_interval: beyond a minute the acks a power cut repeats stop being few
MAX_SECONDS = 365 * 86400.0  # durations: NaN, inf and 1e300 would crash a socket or disable a check
MAX_RATE = 1e9  # events or lines per second: beyond this a limit limits nothing
MAX_SIZE = 1 << 50
RESERVED_HEADERS = ("timestamp", "host", "file", "id", "split", "truncated")


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, kind: str | None = None,
        choices: tuple = (), lo: float | None = None, factory: Any = dataclasses.MISSING):
    """A config field with the metadata the loader and the generated reference read."""
    meta = {"help": help, "flag": flag, "kind": kind, "choices": choices, "lo": lo}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- the typed config


@dataclass(frozen=True)
class AgentSection:
    drain_timeout: float = opt(10.0, "On SIGTERM/SIGINT (and SIGHUP reloads), seconds to finish in-flight "
                               "batches before giving them back to the channel.", flag="--drain-timeout", lo=0)
    metrics_listen: str | None = opt(None, "HOST:PORT for the HTTP endpoint serving Prometheus `/metrics` and "
                                     "`/health` (unset: no endpoint). Port 0 picks a free port (logged).",
                                     flag="--metrics-listen")
    stall_timeout: float = opt(300.0, "`/health` answers 503 when events are queued and nothing has been "
                               "acknowledged for this many seconds.", flag="--stall-timeout", lo=0.1)
    progress_interval: float = opt(30.0, "Seconds between progress log lines (shipped, rate, queued, bytes "
                                   "behind, collectors up; with --once the time left); 0: none. On a terminal, "
                                   "tail --once redraws a live line instead.", flag="--progress-interval", lo=0)
    give_up_after: float = opt(0.0, "Give up (exit 10) when events are queued and no collector has acknowledged "
                               "anything for this many seconds; the events stay in the channel for the next run. "
                               "0: never, keep retrying (the default: a service should outlast an outage; set "
                               "it for tail --once under cron when a run should end rather than wait).",
                               flag="--give-up-after", lo=0)
    status_interval: float = opt(2.0, "Seconds between looks at the agent's state for `status.json` in the "
                                 "state directory (read by `flume-ship status`): rewritten when something "
                                 "changed, else only touched, and rewritten at least every minute.",
                                 flag="--status-interval", lo=0.1)
    max_open_files: int = opt(0, "Most tailed files open at once, all sources together; files beyond it are "
                              "read in turns (at their end first, least recently grown next). 0: the open-file "
                              "limit (the agent raises its soft RLIMIT_NOFILE to the hard limit at start) less "
                              "a reserve of max(64, limit/8) for the channel, sockets and the metrics endpoint. "
                              "Not reloadable.", flag="--max-open-files", lo=0)


@dataclass(frozen=True)
class ChannelSection:
    state_dir: str | None = opt(None, "Where the channel and file offsets live (locked: one agent per "
                                "directory). Unset: /var/lib/flume-ship as root, else $XDG_STATE_HOME/flume-ship "
                                "or ~/.local/state/flume-ship. Not reloadable.", flag="--state-dir")
    capacity: int = opt(1 << 30, "Channel capacity in bytes; when full, reading pauses (the files are the "
                        "buffer). Not reloadable.", flag="--capacity", kind="size", lo=1)
    min_free: int = opt(500 * 1024 * 1024, "Pause reading while the state directory's filesystem has less "
                        "free space than this. Not reloadable.", flag="--min-free", kind="size", lo=0)
    ack_sync_interval: float = opt(1.0, "Seconds by which an acknowledgement's removal of delivered events is "
                                   "made durable (fdatasync); a put is always durable before it returns. After a "
                                   "power cut at most this many seconds of acks are repeated (events sent again, "
                                   "never lost); a clean stop syncs them all. 0: sync every ack commit. Not "
                                   "reloadable.", flag="--ack-sync-interval", lo=0)


@dataclass(frozen=True)
class DeliverySection:
    collectors: tuple[str, ...] = opt(help="Collectors as a list of \"HOST:PORT\" (Flume AvroSources or "
                                      "flume-ship collect) or \"thrift://HOST:PORT[?protocol=binary]\" (Flume "
                                      "ThriftSources); both kinds mix in one group. Required.", flag="--to",
                                      factory=tuple)
    balance: str = opt("failover", "failover (listed order, the first healthy collector takes all), "
                       "round_robin or random.", flag="--balance", choices=("failover", "round_robin", "random"))
    max_penalty: float = opt(30.0, "Longest time in seconds a failing collector is skipped: "
                             "min(this, 2^failures).", flag="--max-penalty", lo=0)
    backoff_max: float = opt(30.0, "Cap in seconds on the wait between retries while no collector is healthy.",
                             flag="--backoff-max", lo=0.1)
    busy_penalty: float = opt(5.0, "Longest time in seconds a collector that is alive but busy (it answered "
                              "FAILED or with an error) is skipped, and the cap on the wait before trying it "
                              "again; Flume's own sink runner backs off at most 5 s. An unreachable collector "
                              "keeps --max-penalty.", flag="--busy-penalty", lo=0.1)
    batch_size: int = opt(1000, "Most events in one appendBatch.", flag="--batch-size", lo=1)
    batch_bytes: int = opt(4 << 20, "Most event bytes in one appendBatch.", flag="--batch-bytes", kind="size", lo=1)
    linger: float = opt(0.2, "Seconds a partial batch waits for more events before it is sent (the rest of a burst, right "
                        "after a whole batch, is sent at once).", flag="--linger",
                        lo=0)
    sinks: int = opt(1, "Sink workers, each sending its own lane of the channel: all lines of a file (and of "
                     "its rotated predecessors) take one lane, so every file arrives in order while "
                     "different files are sent in parallel (each lane with up to `in_flight` calls in flight).",
                     flag="--sinks", lo=1)
    in_flight: int = opt(2, "Calls in flight per sink into a collector that promises ordered pipelining "
                         "(flume-ship collect says so in its handshake): a refused call is never overtaken, so "
                         "order per file holds. Into any other collector (Flume, Thrift), one at a time. A kill "
                         "may send up to in_flight + 1 batches per sink again. 1: never pipeline.",
                         flag="--in-flight", lo=1)
    connect_timeout: float = opt(5.0, "Seconds for the TCP connect and the TLS handshake.",
                                 flag="--connect-timeout", lo=0.001)
    request_timeout: float = opt(20.0, "Seconds for each call's reply; the first call of a connection "
                                 "includes the Avro handshake.", flag="--request-timeout", lo=0.001)
    compress: str = opt("none", "Compression on the wire: none or deflate (Flume's compression-type). Both ends "
                        "must agree: nothing on the wire negotiates it.", flag="--compress", choices=("none", "deflate"))
    compression_level: int = opt(6, "zlib level 0-9 for deflate.", flag="--compression-level", lo=0)
    max_events_per_second: float = opt(0.0, "Most events this group's sinks send per second, all of them "
                                       "together; the rest waits in the channel. 0: no limit.", lo=0)
    max_bytes_per_second: int = opt(0, "Most event bytes this group's sinks send per second; the rest waits in "
                                    "the channel. 0: no limit.", kind="size", lo=0)
    reset_connection_interval: float = opt(0.0, "Reconnect each collector connection this many seconds after it "
                                           "was opened, between two batches (Flume's reset-connection-interval: "
                                           "collectors behind a load balancer or VIP get traffic when hosts are "
                                           "added). 0: keep connections.", lo=0)
    max_rejects: int = opt(0, "A batch the collectors REJECT this many times (they answered FAILED or an error, "
                           "not unreachable: that is retried for ever) is moved aside, and delivery goes on: to "
                           "`secondary`, else to the dead letters (`flume-ship channel dead-letters`). 0: never.",
                           lo=0)
    secondary: str | None = opt(None, "With `max_rejects`, the group (`[groups.NAME]`) that takes the batches this "
                                "group gave up on (Fluentd's `<secondary>`). Unset: the dead letters.")
    tls: bool = opt(False, "Use TLS and verify the collector's certificate (system CA store unless tls_ca).",
                    flag="--tls")
    tls_ca: str | None = opt(None, "CA bundle (PEM) to verify the collector's certificate with; implies tls.",
                             flag="--tls-ca")
    tls_insecure: bool = opt(False, "TLS WITHOUT verifying the certificate (like Flume's trust-all-certs); "
                             "implies tls. For tests only.", flag="--tls-insecure")
    tls_server_name: str | None = opt(None, "Name to verify in the certificate and send as SNI (default: the "
                                      "collector's host).", flag="--tls-server-name")
    tls_layering: str = opt("zlib-outside", "With TLS and deflate together: zlib-outside (zlib carries TLS, "
                            "Flume >= 1.10) or tls-outside (TLS carries zlib, Flume <= 1.9).", flag="--tls-layering",
                            choices=("zlib-outside", "tls-outside"))
    # mutual TLS: the certificate presented to a collector that requires one (collect --tls-client-ca)
    tls_cert: str | None = opt(None, "Client certificate chain (PEM) to present to collectors that require one "
                               "(mutual TLS); needs tls_key; implies tls.", flag="--tls-cert")
    tls_key: str | None = opt(None, "Private key (PEM) of tls_cert.", flag="--tls-key")


@dataclass(frozen=True)
class SourceSection:
    name: str = opt(DEFAULT_SOURCE, "The table name (`[sources.NAME]`); also the prefix of the source's "
                    "offset records, so renaming a source reads its files afresh.", kind="name")
    paths: tuple[str, ...] = opt(help="Files or globs (`*`, `**`) to tail. Required.", flag="PATHS",
                                 factory=tuple)
    headers: tuple[tuple[str, str], ...] = opt(help="Static headers added to every event of this source, "
                                               "as a table `{ key = \"value\" }`.", flag="--header",
                                               kind="headers", factory=tuple)
    from_end: bool = opt(False, "Start files seen for the first time at their end.", flag="--from-end")
    max_line_bytes: int = opt(2 << 20, "A longer line is split into events of this size (marked with a "
                              "`split` header), or truncated.", flag="--max-line-bytes", kind="size", lo=1)
    long_lines: str = opt("split", "split (ship every byte in pieces) or truncate (drop the rest).",
                          choices=("split", "truncate"))
    timestamp_header: bool = opt(True, "Add the `timestamp` header (ms since the epoch).",
                                 flag="--no-timestamp-header")
    host_header: bool = opt(True, "Add the `host` header.", flag="--no-host-header")
    file_header: bool = opt(True, "Add the `file` header (the path).", flag="--no-file-header")
    event_id: bool = opt(False, "Add an `id` header (file generation and byte offset) for receiver-side "
                         "dedup.", flag="--event-id")
    host: str | None = opt(None, "Value of the `host` header (default: this machine's name).")
    partial_line_timeout: float = opt(5.0, "An incomplete last line idle this long is shipped as it is.", lo=0)
    rescan_interval: float = opt(5.0, "Seconds between glob rescans (the safety net under inotify).", lo=0)
    close_inactive: float = opt(60.0, "Close a file unchanged this long (reopened when it changes).", lo=0)
    rotate_wait: float = opt(5.0, "Keep a rotated file open this long after its last growth.", lo=0)
    # Events, not lines: rules (docs/tail.md "Events, not lines"), compiled by shipper.tail.rules.
    multiline: Any = opt(None, "Lines that make one event: a preset (`\"java\"`, `\"python\"`, `\"go\"`) or a table "
                         "`{ start | pattern, negate, max_lines = 500, max_bytes = \"10M\", timeout = 5 }`.",
                         flag="--multiline", kind="table")
    include_lines: tuple[str, ...] = opt(help="Regexes: only events matching one are shipped (others are dropped "
                                         "and counted).", flag="--include-lines", factory=tuple)
    exclude_lines: tuple[str, ...] = opt(help="Regexes: events matching one are dropped (and counted).",
                                         flag="--exclude-lines", factory=tuple)
    extract: Any = opt(None, "`{ regex = \"(?P<name>...)\", preserve_existing = false }`: each named group becomes "
                       "a header (Flume's regex_extractor).", kind="table")
    event_time: Any = opt(None, "`{ group = \"time\", format = \"iso8601\", timezone = \"local\", regex, "
                          "unparsed_header }`: the timestamp header from the event's own first line.", kind="table")
    file_header_key: str = opt("file", "Key of the file header (Flume's fileHeaderKey).")
    host_header_key: str = opt("host", "Key of the host header (Flume's hostHeader).")
    timestamp_header_key: str = opt("timestamp", "Key of the timestamp header (Flume's headerName).")
    host_header_value: str = opt("name", "name (this machine's name) or ip (its address, Flume's useIP).",
                                 choices=("name", "ip"))
    byte_offset_header: bool = opt(False, "Add `byteoffset`: the event's first byte in the file (Flume's "
                                   "byteOffsetHeader).", flag="--byte-offset-header")
    uuid_header: str | None = opt(None, "Add a random UUID under this key (Flume's UUID interceptor).")
    exclude: tuple[str, ...] = opt(help="Globs of files not to tail, matched against the name (`\"*.gz\"`) or, "
                                   "with a `/`, the whole path.", flag="--exclude", factory=tuple)
    ignore_older: float = opt(0.0, "A file seen for the first time and unmodified for this many seconds is taken "
                              "from its end (0: off).", lo=0)
    max_lines_per_second: float = opt(0.0, "Most events (lines) this source puts into the channel per second, "
                                      "averaged (a backlog catch-up then does not flood shared collectors); "
                                      "reading waits, nothing is dropped. 0: no limit.", lo=0)
    max_bytes_per_second: int = opt(0, "Most event bytes this source puts into the channel per second; reading "
                                    "waits. 0: no limit.", kind="size", lo=0)
    groups: tuple[str, ...] = opt(help="Collector groups (`[groups.NAME]`) this source's events go to; two or "
                                  "more send every event to each (Flume's replicating selector). Unset: every "
                                  "group when the config has `[groups]` and no `route`.", factory=tuple)
    route: Any = opt(None, "`{ header = \"kind\", mapping = { error = [\"alerts\"], ... }, default = [\"main\"] }`: "
                     "the group(s) chosen by a header's value, event by event (Flume's multiplexing selector); "
                     "an event whose value is not mapped goes to `default`. Instead of `groups`.", kind="table")
    encoding: str | None = opt(None, "The files' encoding (`utf-16le`, `utf-16be`, `utf-16` by BOM, `latin-1`, `gbk`, "
                               "...): lines are split in it and shipped as UTF-8. Unset: bytes pass unchanged.")

    def rules(self, errors: list | None = None):
        from shipper.tail.rules import rules_from

        def table(v):
            return dict(v) if isinstance(v, tuple) else v

        if self.encoding is not None and errors is not None:
            from shipper.tail.decode import check_encoding
            from shipper.tail.rules import RuleError

            try:
                check_encoding(self.encoding)
            except RuleError as exc:
                errors.append(exc)
        return rules_from(multiline=table(self.multiline), include_lines=self.include_lines,
                          exclude_lines=self.exclude_lines, extract=table(self.extract),
                          event_time=table(self.event_time), errors=errors)

    def tail_options(self):
        from shipper.tail import TailOptions

        host = self.host
        if host is None and self.host_header_value == "ip":
            from shipper.transport import local_address

            host = local_address()
        return TailOptions(
            paths=list(self.paths), from_end=self.from_end, max_line_bytes=self.max_line_bytes,
            long_lines=self.long_lines, partial_line_timeout=self.partial_line_timeout,
            rescan_interval=self.rescan_interval, close_inactive=self.close_inactive, rotate_wait=self.rotate_wait,
            headers=dict(self.headers), add_timestamp=self.timestamp_header, add_host=self.host_header,
            add_file=self.file_header, add_event_id=self.event_id, host=host,
            rules=self.rules(), file_key=self.file_header_key, host_key=self.host_header_key,
            timestamp_key=self.timestamp_header_key, byte_offset_header=self.byte_offset_header,
            uuid_header=self.uuid_header, exclude=self.exclude, ignore_older=self.ignore_older,
            encoding=self.encoding,
        )


@dataclass(frozen=True)
class Config:
    agent: AgentSection = field(default_factory=AgentSection)
    channel: ChannelSection = field(default_factory=ChannelSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    sources: tuple[SourceSection, ...] = ()
    file: str | None = None  # the file it was read from, if any
    # [groups.NAME]: (name, its delivery settings: [delivery]'s, overridden by the table); () = one
    # implicit group, [delivery] itself (see shipper.agent.routes)
    groups: tuple[tuple[str, DeliverySection], ...] = ()

    def group(self, name: str) -> "Config":
        """This config as the one group ``name`` sees it: its settings as ``delivery``."""
        return dataclasses.replace(self, delivery=dict(self.groups)[name], groups=())

    def state_path(self) -> Path:
        from shipper.channel.statedir import default_state_dir

        return Path(self.channel.state_dir).expanduser() if self.channel.state_dir else default_state_dir()

    def addresses(self) -> list:
        from shipper.transport import Address

        return [Address.parse_collector(c) for c in self.delivery.collectors]

    def client_options(self):
        return client_options_of(self.delivery)

    def sink_options(self):
        from shipper.sink.worker import SinkOptions

        d = self.delivery
        return SinkOptions(batch_size=d.batch_size, batch_bytes=d.batch_bytes, linger=d.linger,
                           backoff_max=d.backoff_max, busy_penalty=d.busy_penalty, max_rejects=d.max_rejects,
                           reset_connection_interval=d.reset_connection_interval, in_flight=d.in_flight)


def client_options_of(d: DeliverySection):
    """The transport options of a [delivery] section: the one place ``tail``, ``send`` and ``ping``
    turn transport settings into ``ClientOptions``."""
    from shipper.transport import ClientOptions, TLSOptions

    tls = None
    if d.tls or d.tls_ca or d.tls_insecure or d.tls_cert:
        tls = TLSOptions(ca_file=d.tls_ca, insecure=d.tls_insecure, server_name=d.tls_server_name,
                         cert_file=d.tls_cert, key_file=d.tls_key)
    return ClientOptions(connect_timeout=d.connect_timeout, request_timeout=d.request_timeout,
                         compress=None if d.compress == "none" else d.compress,
                         compression_level=d.compression_level, tls=tls, tls_layering=d.tls_layering)


SECTIONS = {"agent": AgentSection, "channel": ChannelSection, "delivery": DeliverySection}


# --------------------------------------------------------------------------- loading


def default_config_path() -> str | None:
    """``$FLUME_SHIP_CONFIG``, else the system file when it exists, else None."""
    env = os.environ.get("FLUME_SHIP_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def load_raw(path: str) -> dict:
    """Parse a TOML file into dicts; a missing or malformed file is a ConfigFileError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigFileError([Problem(path, "-", "no such file (give the path of an existing config file)")]) from None
    except OSError as exc:
        raise ConfigFileError([Problem(path, "-", f"cannot read ({exc.strerror or exc}); give the path of a readable "
                                       "TOML file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([Problem(path, "-", f"not valid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError([Problem(path, "-", f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset "
                                       f"{exc.start} (TOML files are UTF-8; re-save it as UTF-8)")]) from None


@dataclass
class Overlay:
    """Command-line values laid over the file's: ``(section, key) -> value`` plus the flag that set it."""

    values: dict[tuple[str, str], Any] = field(default_factory=dict)
    flags: dict[tuple[str, str], str] = field(default_factory=dict)
    paths: list[str] | None = None  # PATHS given: they replace the file's sources with one "default"
    source_values: dict[str, Any] = field(default_factory=dict)  # applied to every source
    source_flags: dict[str, str] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)  # --header, merged into every source's

    def set(self, section: str, key: str, value: Any, flag: str) -> None:
        self.values[(section, key)] = value
        self.flags[(section, key)] = flag

    def set_source(self, key: str, value: Any, flag: str) -> None:
        self.source_values[key] = value
        self.source_flags[key] = flag


def load(path: str | None, overlay: Overlay | None = None) -> Config:
    """The whole pipeline: file (if any) + flags -> checked Config, or ConfigFileError with every problem."""
    raw = load_raw(path) if path else {}
    return build(raw, path, overlay or Overlay())


def load_source(path: str | None, name: str, overlay: Overlay | None = None) -> SourceSection:
    """One source's table, checked on its own (no collector needed): ``flume-ship test-source``.

    Without the table (or without a file), flags alone make the source; its paths are unused."""
    raw = load_raw(path) if path else {}
    where = path or "command line"
    problems: list[Problem] = []
    origin: dict[str, str] = {}

    def bad(key: str, why: str) -> None:
        problems.append(Problem("command line" if key in origin else where, origin.get(key, key), why))

    tables = raw.get("sources", {})
    if not isinstance(tables, dict):
        tables = {}
    if name not in tables and path:
        known = ", ".join(tables) or "none"
        raise ConfigFileError([Problem(where, f"sources.{name}", f"no such source (sources in the file: {known})")])
    table = tables.get(name) or {"paths": ["-"]}
    src = _build_sources({"sources": {name: table}}, overlay or Overlay(), bad, origin)
    if problems:
        raise ConfigFileError(problems)
    return src[0]


def build(raw: dict, path: str | None, overlay: Overlay) -> Config:
    where = path or "command line"
    problems: list[Problem] = []
    origin: dict[str, str] = {}  # dotted key -> flag, for values that came from the command line

    def bad(key: str, why: str) -> None:
        problems.append(Problem("command line" if key in origin else where, origin.get(key, key), why))

    for key in raw:
        if key not in (*SECTIONS, "sources", "groups"):
            bad(key, f"unknown section (known: {', '.join([*SECTIONS, 'sources', 'groups'])})")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            bad(name, "must be a table ([%s])" % name)
            table = {}
        table = dict(table)
        for (sec, key), value in overlay.values.items():
            if sec == name:
                table[key] = value
                origin[f"{name}.{key}"] = overlay.flags[(sec, key)]
        sections[name] = _build_section(cls, table, name, bad)

    sources = _build_sources(raw, overlay, bad, origin)
    from shipper.agent.routes import build_groups

    groups = build_groups(raw, sections["delivery"], sources, lambda t, p: _build_section(DeliverySection, t, p, bad),
                          bad)
    if groups:
        pass  # each group's collectors are checked by build_groups; [delivery] only lends defaults
    elif not sections["delivery"].collectors and not any(p.key in ("delivery.collectors", "--to") for p in problems):
        problems.append(Problem(where, "delivery.collectors", "no collector given: set collectors = "
                                "[\"host:port\"] or pass --to HOST:PORT"))
    if not sources and not any(p.key.startswith("sources") for p in problems):
        problems.append(Problem(where, "sources", "nothing to tail: add a [sources.NAME] table with paths, "
                                "or give PATHS on the command line"))
    _check_combinations(sections, sources, bad)
    if problems:
        raise ConfigFileError(problems)
    return Config(agent=sections["agent"], channel=sections["channel"], delivery=sections["delivery"],
                  sources=tuple(sources), file=path, groups=groups)


def _build_sources(raw: dict, overlay: Overlay, bad, origin: dict[str, str]) -> list[SourceSection]:
    if overlay.paths is not None:
        tables = {DEFAULT_SOURCE: {"paths": list(overlay.paths)}}
        origin[f"sources.{DEFAULT_SOURCE}.paths"] = "PATHS"
    else:
        tables = raw.get("sources", {})
        if not isinstance(tables, dict):
            bad("sources", "must be tables: [sources.NAME]")
            return []
    out = []
    for name, table in tables.items():
        prefix = f"sources.{name}"
        if not named_table("sources", name, table, "paths", bad):
            continue
        table = dict(table)
        if "name" in table:
            bad(f"{prefix}.name", "the name is the table's own name; remove this key")
            continue
        for key, value in overlay.source_values.items():
            table[key] = value
            origin[f"{prefix}.{key}"] = overlay.source_flags[key]
        if overlay.extra_headers:
            headers = table.get("headers", {})
            if isinstance(headers, dict):
                table["headers"] = {**headers, **overlay.extra_headers}
                if "headers" not in raw.get("sources", {}).get(name, {}):
                    origin[f"{prefix}.headers"] = "--header"
        table["name"] = name
        src = _build_section(SourceSection, table, prefix, bad)
        errors: list = []
        src.rules(errors)
        for err in errors:
            top = f"{prefix}.{err.key.split('.')[0].split('[')[0]}"
            bad(top if top in origin else f"{prefix}.{err.key}", err.why)
        if not src.paths and f"{prefix}.paths" not in origin and "paths" not in table:
            bad(f"{prefix}.paths", "required: a list of files or globs")
        elif not errors:
            try:  # the checks the tail options make of their own (checked here, not at start)
                src.tail_options()
            except (ConfigError, ValueError) as exc:
                bad(prefix, str(exc))
        out.append(src)
    return out


def named_table(kind: str, name: str, table, needs: str, bad) -> bool:
    """A ``[KIND.NAME]`` table is a table under a usable name; else say what is wrong (False)."""
    if not isinstance(table, dict):
        bad(f"{kind}.{name}", f"must be a table ([{kind}.NAME] with {needs} = [...])")
        return False
    if not SOURCE_NAME.match(name):
        bad(f"{kind}.{name}", f"a {kind[:-1]} name may hold only letters, digits, '_', '-' and '.' (at most 64)")
        return False
    return True


def _build_section(cls, table: dict, prefix: str, bad):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        f = fields.get(key)
        if f is None:
            near = [n for n in fields if n != "name" and (n.startswith(key[:3]) or key in n)]
            hint = f" (did you mean {' or '.join(near[:2])}?)" if near else ""
            bad(f"{prefix}.{key}", f"unknown key{hint}")
            continue
        try:
            kwargs[key] = _convert(f, value)
        except ValueError as exc:
            bad(f"{prefix}.{key}", str(exc))
    return cls(**kwargs)


def _convert(f: dataclasses.Field, value: Any) -> Any:
    meta, default = f.metadata, f.default
    kind, choices, lo = meta.get("kind"), meta.get("choices"), meta.get("lo")
    ftype = str(f.type)
    if kind == "size":
        value = parse_size(value)
        if value > MAX_SIZE:
            raise ValueError(f"must be at most 1P ({MAX_SIZE} bytes), not {value}")
    elif kind == "headers":
        if not isinstance(value, dict):
            raise ValueError("must be a table of strings, like { env = \"prod\" }")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ValueError(f"header {k!r} must be a string, not {type(v).__name__}")
            if k in RESERVED_HEADERS:
                raise ValueError(f"header {k!r} is set by the source itself (see the *_header options)")
        value = tuple(sorted(value.items()))
    elif kind == "name":
        return value
    elif kind == "table":  # checked by its own module (shipper.tail.rules); kept hashable here
        if isinstance(value, dict):
            return tuple(sorted(value.items()))
        if isinstance(value, str):
            return value
        raise ValueError("must be a table { key = value, ... }")
    elif ftype.startswith("tuple"):
        if isinstance(value, str):
            raise ValueError(f"must be a list of strings, like [{value!r}], not a string".replace("'", '"'))
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError("must be a non-empty list of strings")
        value = tuple(value)
    elif ftype == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif ftype == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
        if not -MAX_INT <= value <= MAX_INT:
            raise ValueError(f"must be at most {MAX_INT}, not {value}")
    elif ftype == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = "per second" if f.name.endswith("_per_second") else "of seconds"
            raise ValueError(f"must be a number {what}, not {value!r}")
        value = float(value)
        if f.name.endswith("_per_second"):  # a rate, not a duration
            unit = f.name.removeprefix("max_").removesuffix("_per_second")
            if not math.isfinite(value) or abs(value) > MAX_RATE:
                raise ValueError(f"must be a finite number of {unit} per second up to {MAX_RATE:.0f}, not {value:g}")
        elif not math.isfinite(value) or abs(value) > MAX_SECONDS:
            raise ValueError(f"must be a finite number of seconds up to {MAX_SECONDS:.0f} (a year), not {value:g}")
    elif "str" in ftype:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {value!r}")
    if choices and value not in choices:
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
    if lo is not None and isinstance(value, (int, float)) and value < lo:
        raise ValueError(f"must be at least {lo:g}")
    del default
    return value


def check_flag(section: type, name: str, value: Any, flag: str) -> Any:
    """A flag of a command without a config file (``send``, ``ping``), checked as the key it sets."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    try:
        return _convert(f, value)
    except ValueError as exc:
        raise ConfigFileError([Problem("command line", flag, str(exc))]) from None


def _check_combinations(sections: dict, sources: list[SourceSection], bad) -> None:
    from shipper.transport import Address

    d: DeliverySection = sections["delivery"]
    for i, text in enumerate(d.collectors):
        try:
            Address.parse_collector(text)
        except ConfigError as exc:
            bad("delivery.collectors", str(exc))
    if d.compression_level > 9:
        bad("delivery.compression_level", "must be 0 to 9")
    if sections["channel"].ack_sync_interval > MAX_ACK_SYNC:
        bad("channel.ack_sync_interval", f"must be at most {MAX_ACK_SYNC:g} seconds (it bounds the acks a power "
            "cut may repeat)")
    if len(set(d.collectors)) != len(d.collectors):
        bad("delivery.collectors", "a collector is listed twice")
    if d.tls_insecure and d.tls_ca:
        bad("delivery.tls_insecure", "contradicts tls_ca (verify with that CA, or do not verify): give one of them")
    if bool(d.tls_cert) != bool(d.tls_key):
        bad("delivery.tls_cert", "tls_cert and tls_key go together")
    listen = sections["agent"].metrics_listen
    if listen:
        try:
            Address.parse(listen)
        except ConfigError as exc:
            bad("agent.metrics_listen", str(exc))
    seen: dict[str, str] = {}
    for src in sources:
        for pat in src.paths:
            full = os.path.abspath(os.path.expanduser(pat))
            if full in seen and seen[full] != src.name:
                bad(f"sources.{src.name}.paths", f"{pat!r} is also in sources.{seen[full]}: a file tailed by "
                    "two sources is shipped twice")
            seen.setdefault(full, src.name)
    for a, b, path in overlaps(sources):
        bad(f"sources.{b}.paths", f"{path} is matched by sources.{a} too: a file tailed by two sources is "
            "shipped twice; narrow one of the globs")


def overlaps(sources: Iterable[SourceSection]) -> list[tuple[str, str, str]]:
    """Files that two sources' globs match right now: (first source, second source, path)."""
    owner: dict[tuple[int, int], str] = {}
    out = []
    for src in sources:
        mine: set[tuple[int, int]] = set()
        for pat in src.paths:
            for p in glob.iglob(os.path.abspath(os.path.expanduser(pat)), recursive=True):
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in mine:
                    continue
                mine.add(ident)
                if ident in owner and owner[ident] != src.name:
                    out.append((owner[ident], src.name, p))
                owner.setdefault(ident, src.name)
    return out


# --------------------------------------------------------------------------- the generated reference

REFERENCE_BEGIN = "<!-- BEGIN GENERATED REFERENCE: python3 -m shipper.agent.config > this block -->"
REFERENCE_END = "<!-- END GENERATED REFERENCE -->"


def _show_default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "(required)" if "Required" in f.metadata.get("help", "") else "(none)"
    value = f.default
    if value is None:
        return "(unset)"
    if f.metadata.get("kind") == "size":
        for unit, n in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if value % n == 0:
                return f'`"{value // n}{unit}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def reference_markdown() -> str:
    """The option tables of docs/configuration.md, one per section, from the dataclasses."""
    out = [REFERENCE_BEGIN, ""]
    tables = [(f"[{name}]", cls) for name, cls in SECTIONS.items()] + [("[sources.NAME]", SourceSection)]
    for title, cls in tables:
        out += [f"### `{title}`", "", "| key | default | flag | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.metadata.get("kind") == "name":
                continue
            flag = f.metadata.get("flag")
            out.append(f"| `{f.name}` | {_show_default(f)} | {f'`{flag}`' if flag else ''} | "
                       f"{f.metadata['help']} |")
        out.append("")
    out += ["### `[groups.NAME]`", "", "A collector group (routes): every key of `[delivery]`, each one the group "
            "does not set taken from `[delivery]`; `collectors` is required. Flags set `[delivery]` only.", ""]
    out.append(REFERENCE_END)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - regenerates the reference block
    print(reference_markdown(), end="")
