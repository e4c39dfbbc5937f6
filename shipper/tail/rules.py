"""A tail source's event rules: multiline grouping, include/exclude filters, extraction, event time.

Sans-IO and pure: this module compiles and checks the rules of one source (from its config table)
and answers questions about bodies; it reads no file and keeps no clock. The cutter that applies
them to a file's bytes, with the offset bookkeeping, is :mod:`shipper.tail.events`.

Rules and their order (per event):

1. *Multiline* (:class:`Multiline`): which lines belong together. A line is a *continuation* (it
   joins the event before it) when ``pattern`` matches it, or, with ``negate``, when it does not
   (so ``start = RE`` is ``pattern = RE, negate = true``: a matching line starts an event). The
   first line of a file, and of the data after an event was cut, always starts an event.
   Patterns are searched in each line (anchor them with ``^``), as Filebeat's are. Presets:
   :data:`PRESETS`. Bounds: ``max_lines`` and ``max_bytes`` (the event is cut into pieces marked
   with the ``split`` header) and ``timeout`` (a held event idle this long is shipped).
2. *Filter*: ``include_lines`` (if any, an event must match one) then ``exclude_lines`` (an event
   matching one is dropped); searched anywhere in the whole event. Dropped events are counted.
3. *Extraction* (:class:`Extract`): a regex with named groups searched in the event; each group
   that took part in the match becomes a header (Flume's ``regex_extractor``). With
   ``preserve_existing`` a header the event already has (static, file, host) is kept.
4. *Event time* (:class:`EventTime`): a named group found in the event's *first line* (a multiline
   event takes the time of its first line), parsed with ``format`` (``iso8601``, ``epoch_s``,
   ``epoch_ms`` or a strptime pattern) in ``timezone`` when the stamp has none; it becomes the
   timestamp header (ms since the epoch). A stamp that does not parse leaves the read time, is
   counted, and, with ``unparsed_header``, marks the event.

Every regex is compiled here once, as a bytes pattern (bodies are never decoded to match), and
every mistake raises :class:`RuleError` naming the key, so ``flume-ship validate`` reports them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shipper.errors import ConfigError

MiB = 1024 * 1024

# Continuation patterns (a matching line joins the event before it).
_JAVA = (
    r"^(?:[ \t]+(?:at |\.\.\. \d+ (?:more|common frames omitted)|Caused by: |Suppressed: )"
    r"|Caused by: "
    r"|(?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*(?:Exception|Error|Throwable)\b(?::|\s*$))"
)
_PYTHON = (
    r"^(?:[ \t]+\S"
    r"|Traceback \(most recent call last\):"
    r"|During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:"
    r"|\s*$"
    r"|(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt|Iteration|Group)\b(?::|\s*$))"
)
_GO = (
    r"^(?:\s*$"
    r"|goroutine \d+ .*\[.*\]:\s*$"
    r"|\[signal "
    r"|\t"
    r"|created by "
    r"|(?:[\w.\-/]+/)?[\w\-]+\.(?:\(\*?[\w\[\],. ]+\)\.)?[\w\[\],.]+\(.*\)\s*$)"
)
PRESETS: dict[str, str] = {"java": _JAVA, "python": _PYTHON, "go": _GO}

TIME_FORMATS = ("iso8601", "epoch_s", "epoch_ms")


class RuleError(ConfigError):
    """A rule that cannot work; ``key`` is the offending key under the source's table."""

    def __init__(self, key: str, why: str):
        self.key = key
        self.why = why
        super().__init__(f"{key}: {why}")


def _compile(key: str, text: Any) -> re.Pattern[bytes]:
    if not isinstance(text, str) or not text:
        raise RuleError(key, "must be a non-empty regular expression string")
    try:
        return re.compile(text.encode())
    except re.error as exc:
        raise RuleError(key, f"not a valid regular expression ({exc})") from None


def _any_of(key: str, texts: Any) -> re.Pattern[bytes] | None:
    """One pattern matching where any of ``texts`` would (each checked on its own first)."""
    if not texts:
        return None
    if isinstance(texts, str):
        texts = [texts]
    for i, t in enumerate(texts):
        _compile(f"{key}[{i}]", t)
    return re.compile(b"|".join(b"(?:" + t.encode() + b")" for t in texts))


def _number(key: str, value: Any, lo: float, *, whole: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise RuleError(key, f"must be a {'whole ' if whole else ''}number, not {value!r}")
    if value < lo:
        raise RuleError(key, f"must be at least {lo:g}")
    return value


def _unknown(table: Mapping, known: tuple[str, ...], prefix: str) -> None:
    for k in table:
        if k not in known:
            raise RuleError(f"{prefix}.{k}", f"unknown key (known: {', '.join(known)})")


@dataclass(frozen=True, slots=True)
class Multiline:
    """Which lines make one event. ``line_re`` finds, at line starts, the lines ``pattern`` matches."""

    pattern: str
    negate: bool = False
    max_lines: int = 500
    max_bytes: int = 10 * MiB
    timeout: float = 5.0
    preset: str | None = None

    @property
    def line_re(self) -> re.Pattern[bytes]:
        return _line_res(self.pattern)[0]

    @property
    def next_line_re(self) -> re.Pattern[bytes]:
        return _line_res(self.pattern)[1]


_LINE_RES: dict[str, tuple[re.Pattern[bytes], re.Pattern[bytes]]] = {}


def _line_res(pattern: str) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """Two zero-width forms of ``pattern``: at a line start (``^``), and at a newline before a line.

    The second lets ``finditer`` over a whole block classify every line in C: it starts with a
    literal ``\\n``, which the regex engine finds with a fast scan instead of trying ``^`` at
    every byte; the lookahead keeps matches zero-width so no line is skipped. An unanchored
    pattern is searched along the line; an anchored one needs no scan along it."""
    res = _LINE_RES.get(pattern)
    if res is None:
        body = pattern.encode()
        look = b"(?=" + body + b")" if pattern.startswith("^") else b"(?=[^\\n]*?(?:" + body + b"))"
        res = (re.compile(b"(?m)^" + look), re.compile(b"(?m)\\n" + look))
        _LINE_RES[pattern] = res
    return res


def multiline_from(value: Any, prefix: str = "multiline") -> Multiline | None:
    """``"java"`` or a table ``{preset | start | pattern, negate, max_lines, max_bytes, timeout}``."""
    from shipper.tail.options import parse_size

    if value is None or value == {}:
        return None
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, Mapping):
        raise RuleError(prefix, "must be a preset name (java, python, go) or a table")
    _unknown(value, ("preset", "start", "pattern", "negate", "max_lines", "max_bytes", "timeout"), prefix)
    given = [k for k in ("preset", "start", "pattern") if k in value]
    if len(given) != 1:
        raise RuleError(prefix, "give exactly one of preset, start or pattern")
    negate = value.get("negate", False)
    if not isinstance(negate, bool):
        raise RuleError(f"{prefix}.negate", "must be true or false")
    preset = None
    if "preset" in value:
        preset = value["preset"]
        if preset not in PRESETS:
            raise RuleError(f"{prefix}.preset", f"{preset!r} is not one of {', '.join(PRESETS)}")
        if "negate" in value:
            raise RuleError(f"{prefix}.negate", "a preset fixes negate; use pattern for your own rule")
        pattern = PRESETS[preset]
    elif "start" in value:
        if "negate" in value:
            raise RuleError(f"{prefix}.negate", "start is a pattern with negate = true; give pattern instead")
        pattern, negate = value["start"], True
    else:
        pattern = value["pattern"]
    _compile(f"{prefix}.{given[0]}", pattern)
    try:
        max_bytes = parse_size(value.get("max_bytes", 10 * MiB))
    except ValueError as exc:
        raise RuleError(f"{prefix}.max_bytes", str(exc)) from None
    if max_bytes < 1:
        raise RuleError(f"{prefix}.max_bytes", "must be at least 1")
    return Multiline(
        pattern=pattern, negate=negate, preset=preset, max_bytes=max_bytes,
        max_lines=int(_number(f"{prefix}.max_lines", value.get("max_lines", 500), 1, whole=True)),
        timeout=float(_number(f"{prefix}.timeout", value.get("timeout", 5.0), 0)),
    )


# ----- event time -----


def _zone(key: str, name: Any) -> tzinfo | None:
    """None means the machine's local zone."""
    if not isinstance(name, str) or not name:
        raise RuleError(key, "must be a zone name like \"UTC\", \"Europe/Berlin\" or \"local\"")
    if name == "local":
        return None
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(key, f"unknown time zone {name!r} (use an IANA name like \"Europe/Berlin\")") from None


def time_parser(fmt: str, zone: tzinfo | None) -> Callable[[str], int]:
    """A function: stamp text -> ms since the epoch (ValueError when it does not parse)."""
    if fmt == "epoch_s":
        return lambda s: int(round(float(s) * 1000))
    if fmt == "epoch_ms":
        return lambda s: int(round(float(s)))

    def finish(dt: datetime) -> int:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=zone) if zone is not None else dt.astimezone()
        return (dt - _EPOCH) // timedelta(milliseconds=1)

    if fmt == "iso8601":
        return lambda s: finish(datetime.fromisoformat(s.strip()))
    return lambda s: finish(datetime.strptime(s.strip(), fmt))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class EventTime:
    regex: re.Pattern[bytes]  # searched in the first line; ``group`` holds the stamp
    group: str
    parse: Callable[[str], int]
    unparsed_header: str | None = None

    def millis(self, first_line: bytes) -> int | None:
        """The event's time in ms, or None when the stamp is missing or does not parse."""
        m = self.regex.search(first_line)
        if m is None:
            return None
        raw = m.group(self.group)
        if raw is None:
            return None
        try:
            return self.parse(raw.decode("utf-8", "replace"))
        except (ValueError, OverflowError, OSError):
            return None


def event_time_from(value: Any, extract: re.Pattern[bytes] | None, prefix: str = "event_time") -> EventTime | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise RuleError(prefix, "must be a table {group, format, timezone, regex, unparsed_header}")
    _unknown(value, ("regex", "group", "format", "timezone", "unparsed_header"), prefix)
    if "regex" in value:
        rx = _compile(f"{prefix}.regex", value["regex"])
    elif extract is not None:
        rx = extract
    else:
        raise RuleError(f"{prefix}.regex", "required when there is no extract.regex to take the group from")
    group = value.get("group", "time")
    if not isinstance(group, str) or group not in rx.groupindex:
        raise RuleError(f"{prefix}.group", f"{group!r} is not a named group (?P<{group}>...) of the regex")
    fmt = value.get("format", "iso8601")
    if not isinstance(fmt, str) or not fmt:
        raise RuleError(f"{prefix}.format", "must be iso8601, epoch_s, epoch_ms or a strptime pattern")
    if fmt not in TIME_FORMATS:
        if "%" not in fmt:
            raise RuleError(f"{prefix}.format", f"{fmt!r} is not iso8601, epoch_s, epoch_ms or a strptime "
                            "pattern like \"%Y-%m-%d %H:%M:%S,%f\"")
        try:
            datetime(2024, 1, 2, 3, 4, 5, 6000).strftime(fmt)
        except ValueError as exc:
            raise RuleError(f"{prefix}.format", f"not a valid strptime pattern ({exc})") from None
    zone = _zone(f"{prefix}.timezone", value.get("timezone", "local"))
    mark = value.get("unparsed_header")
    if mark is not None and (not isinstance(mark, str) or not mark):
        raise RuleError(f"{prefix}.unparsed_header", "must be a header name")
    return EventTime(rx, group, time_parser(fmt, zone), mark)


# ----- the whole set -----


@dataclass(frozen=True, slots=True)
class Extract:
    regex: re.Pattern[bytes]
    preserve_existing: bool = False

    def headers(self, body: bytes) -> dict[str, str] | None:
        m = self.regex.search(body)
        if m is None:
            return None
        return {k: v.decode("utf-8", "replace") for k, v in m.groupdict().items() if v is not None}


def extract_from(value: Any, prefix: str = "extract") -> Extract | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise RuleError(prefix, "must be a table {regex, preserve_existing}")
    _unknown(value, ("regex", "preserve_existing"), prefix)
    rx = _compile(f"{prefix}.regex", value.get("regex"))
    if not rx.groupindex:
        raise RuleError(f"{prefix}.regex", "has no named group (?P<name>...): nothing would be extracted")
    for name in rx.groupindex:
        if name in ("id", "split", "truncated"):
            raise RuleError(f"{prefix}.regex", f"group {name!r} would replace a header the source sets itself")
    keep = value.get("preserve_existing", False)
    if not isinstance(keep, bool):
        raise RuleError(f"{prefix}.preserve_existing", "must be true or false")
    return Extract(rx, keep)


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything a source does to its lines besides cutting them; ``None`` fields are off."""

    multiline: Multiline | None = None
    include: re.Pattern[bytes] | None = None
    exclude: re.Pattern[bytes] | None = None
    extract: Extract | None = None
    event_time: EventTime | None = None

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.multiline, self.include, self.exclude, self.extract,
                                           self.event_time))

    def keep_all(self, bodies: list[bytes]) -> list[bytes]:
        """The bodies the filters keep (the bulk form of :meth:`keep`)."""
        if self.include is not None:
            search = self.include.search
            bodies = [b for b in bodies if search(b) is not None]
        if self.exclude is not None:
            search = self.exclude.search
            bodies = [b for b in bodies if search(b) is None]
        return bodies

    def keep(self, body: bytes) -> bool:
        if self.include is not None and self.include.search(body) is None:
            return False
        return self.exclude is None or self.exclude.search(body) is None


def rules_from(*, multiline: Any = None, include_lines: Any = (), exclude_lines: Any = (), extract: Any = None,
               event_time: Any = None, errors: list[RuleError] | None = None) -> Rules:
    """Compile a source's rules from its config values.

    A bad key raises :class:`RuleError`; with ``errors`` given, every bad key is appended there
    instead (the rule is then left out) so a check can report them all at once."""
    def part(build, *args):
        try:
            return build(*args)
        except RuleError as exc:
            if errors is None:
                raise
            errors.append(exc)
            return None

    ex = part(extract_from, extract)
    return Rules(
        multiline=part(multiline_from, multiline),
        include=part(_any_of, "include_lines", include_lines),
        exclude=part(_any_of, "exclude_lines", exclude_lines),
        extract=ex,
        event_time=part(event_time_from, event_time, ex.regex if ex else None),
    )
