"""``flume-ship import-flume``: a Flume edge agent's .properties file as our TOML.

Theory of operation
-------------------
One pass reads the Java properties (``#``/``!`` comments, ``=``/``:``/blank separators, ``\\``
continuations) and keeps the keys of one agent (``--agent``, or the only agent that has sources).
Every key is then either *used* by the mapping below or reported: the output ends with a comment
block holding each unused key with the reason it was not mapped, and every mapped value that is not
exact carries a comment on its own line. Nothing is dropped silently.

The mapping (docs/migration.md has the tables):

* each TAILDIR source's file groups become ``[sources.SRC_GROUP]`` (or ``[sources.GROUP]`` with one
  source), the file-name regex turned into a glob when it can be (``.*`` -> ``*``, ``\\.`` -> ``.``,
  ``.`` -> ``?``), else the directory's ``*`` with a comment; ``headers.G.K``, ``skipToEnd``,
  ``fileHeader(Key)``, ``byteOffsetHeader``, ``idleTimeout`` map to source keys; Flume's defaults
  are written out where ours differ (file/host/timestamp headers are off unless configured);
* interceptors: timestamp, host, static, regex_filter, regex_extractor (numbered serializers to
  named groups);
* channels: with one channel, its sinks are ``[delivery]``; with several, each channel is a
  ``[groups.CHANNEL]``, and the source's selector (replicating: ``groups``; multiplexing:
  ``route``) names them;
* Avro and Thrift sinks: collectors and their settings; a sink group's failover priorities order
  the collectors, load_balance picks the balance mode; several sinks on one channel without a
  group load-balance, as in Flume.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from shipper.errors import ConfigError


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties, enough for Flume's files (no unicode escapes beyond the plain ones)."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.lstrip()  # trailing blanks belong to the value, as in Java
        if not line or line[0] in "#!":
            continue
        while line.endswith("\\") and not line.endswith("\\\\"):
            line = line[:-1] + next(lines, "").lstrip()
        m = re.match(r"((?:\\.|[^=:\s])+)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[_unescape(m.group(1))] = _unescape(m.group(2))
        else:
            out[_unescape(line)] = ""
    return out


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    """As java.util.Properties reads a value: ``\\X`` is X (so ``\\.`` is a plain dot), ``\\\\`` one backslash."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def agents_in(props: dict[str, str]) -> list[str]:
    return sorted({k.split(".", 1)[0] for k in props if k.count(".") == 1 and k.endswith(".sources")})


@dataclass
class _Out:
    """What the conversion writes: TOML tables, notes beside them, keys it could not use."""

    used: set = field(default_factory=set)
    tables: list = field(default_factory=list)  # (header, [(key, value, note)])
    unmapped: list = field(default_factory=list)  # (key, value, why)
    channel: list = field(default_factory=list)  # ([channel] keys)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if "'" not in value and "\n" not in value and "\\" in value:
        return f"'{value}'"  # a literal string: regexes read as written
    return json.dumps(value)


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _regex_to_glob(regex: str) -> str | None:
    """A file-name regex as a glob, when it says nothing a glob cannot."""
    out, i = [], 0
    while i < len(regex):
        if regex.startswith(".*", i):
            out.append("*")
            i += 2
        elif regex.startswith("\\.", i):
            out.append(".")
            i += 2
        elif regex[i] == ".":
            out.append("?")
            i += 1
        elif regex[i] in "^$" and (i == 0 or i == len(regex) - 1):
            i += 1
        elif regex[i] in "[](){}|+?*\\":
            return None
        else:
            out.append(regex[i])
            i += 1
    return "".join(out)


def _seconds(ms: str) -> float | None:
    try:
        return int(ms) / 1000.0
    except ValueError:
        return None


def _numbered_to_named(regex: str, names: list[str]) -> str | None:
    """Flume's regex_extractor numbers groups; ours names them: the i-th capturing group gets names[i]."""
    out, i, n = [], 0, 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            out.append(regex[i:i + 2])
            i += 2
            continue
        if c == "(" and not regex.startswith("(?", i):
            if n >= len(names):
                return None
            out.append(f"(?P<{names[n]}>")
            n += 1
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out) if n == len(names) else None


def convert(text: str, agent: str | None = None, source_file: str = "flume.properties") -> str:
    """The TOML for one agent of a Flume .properties text (ConfigError when no agent fits)."""
    props = parse_properties(text)
    agents = agents_in(props)
    if agent is None:
        if len(agents) != 1:
            raise ConfigError(f"{source_file}: {'no agent with sources' if not agents else 'several agents: '}"
                              f"{', '.join(agents)}; name one with --agent")
        agent = agents[0]
    elif agent not in agents:
        raise ConfigError(f"{source_file}: no agent {agent!r} with sources (agents: {', '.join(agents) or 'none'})")
    p = {k[len(agent) + 1:]: v for k, v in props.items() if k.startswith(agent + ".")}
    out = _Out()

    def get(key: str, default: str | None = None) -> str | None:
        if key in p:
            out.used.add(key)
            return p[key] if key.endswith(".regex") else p[key].strip()  # Java keeps trailing blanks
        return default

    def listed(key: str) -> list[str]:
        return (get(key) or "").split()

    sources, channels, sinks = listed("sources"), listed("channels"), listed("sinks")
    groups_of_sinks = listed("sinkgroups")
    multi = len(channels) > 1
    delivery_of: dict[str, list] = {}  # channel -> [(key, value, note)]
    for ch in channels:
        delivery_of[ch] = _channel_sinks(ch, sinks, groups_of_sinks, get, p, out)
        _channel_settings(ch, get, p, out)
    if multi:
        for ch in channels:
            out.tables.append((f"[groups.{ch}]", delivery_of[ch]))
    elif channels:
        out.tables.insert(0, ("[delivery]", delivery_of[channels[0]]))
    for src in sources:
        _source(src, len(sources) > 1, multi, channels, get, p, out)
    if multi:
        _comment_unreached(channels, out)
    for key, value in sorted(p.items()):
        if key not in out.used:
            out.unmapped.append((key, value, _why(key)))
    return _render(out, agent, source_file)


def _comment_unreached(channels: list[str], out: _Out) -> None:
    """A channel no source's selector sends to (not mapped, no default; or only ``selector.optional``)
    gets nothing in Flume; as a group no source reaches it would fail ``validate``: write it
    commented out, with why."""
    reached: set[str] = set()
    for header, rows in out.tables:
        if header.startswith("[sources."):
            for key, value, _note in rows:
                if key == "groups":
                    reached |= set(value)
                elif key == "route":
                    reached |= {g for targets in (*value["mapping"].values(), value["default"]) for g in targets}
    for i, (header, rows) in enumerate(out.tables):
        ch = header[len("[groups."):-1] if header.startswith("[groups.") else None
        if ch in channels and ch not in reached:
            notes = [(None, None, f"no selector sends anything to channel {ch} (not mapped, no selector.default), "
                      "so this group would receive nothing: kept here, commented out")]
            notes += [(None, None, note) for key, value, note in rows if note and not key]
            notes += [(None, None, f"{key} = {_toml(value)}") for key, value, _note in rows if key]
            out.tables[i] = (f"# {header}", notes)


def _why(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    reasons = {
        "positionFile": "offsets live in the channel database (channel.state_dir), committed with the events",
        "writePosInterval": "offsets are committed with every batch",
        "checkpointDir": "the channel is one SQLite database in channel.state_dir",
        "dataDirs": "the channel is one SQLite database in channel.state_dir",
        "capacity": "Flume counts events; channel.capacity is in bytes (default 1G)",
        "transactionCapacity": "no equivalent: batches are bounded by batch_size / batch_bytes",
        "batchSize": "the source batches by itself (up to 2000 events or 4 MiB per transaction)",
        "keep-alive": "a put waits for room instead of failing",
        "maxIoWorkers": "no equivalent",
        "type": "no equivalent component type in flume-ship",
        "truststore": "give the CA as a PEM file in tls_ca (keytool -exportcert -rfc)",
        "truststore-password": "tls_ca is a PEM file: no password",
        "truststore-type": "tls_ca is a PEM file",
        "optional": "optional channels have no equivalent: every named group must take the event",
    }
    return reasons.get(last, "no equivalent key in flume-ship (see docs/migration.md)")


def _collector(sink: str, get) -> tuple[str | None, list]:
    kind = (get(f"sinks.{sink}.type") or "").lower()
    host, port = get(f"sinks.{sink}.hostname"), get(f"sinks.{sink}.port")
    get(f"sinks.{sink}.channel")
    if kind not in ("avro", "thrift", "org.apache.flume.sink.avrosink", "org.apache.flume.sink.thriftsink"):
        return None, []
    if not host or not port:
        return None, []
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if "thrift" in kind:
        proto = get(f"sinks.{sink}.protocol")
        addr = f"thrift://{addr}" + (f"?protocol={proto}" if proto and proto != "compact" else "")
    settings = []
    for flume, ours, conv in (("batch-size", "batch_size", int), ("connect-timeout", "connect_timeout", _seconds),
                              ("request-timeout", "request_timeout", _seconds),
                              ("compression-type", "compress", str), ("compression-level", "compression_level", int),
                              ("ssl", "tls", lambda v: v.lower() == "true"),
                              ("trust-all-certs", "tls_insecure", lambda v: v.lower() == "true"),
                              ("reset-connection-interval", "reset_connection_interval", float)):
        value = get(f"sinks.{sink}.{flume}")
        if value is not None:
            settings.append((ours, conv(value), sink))
    return addr, settings


def _channel_sinks(ch: str, sinks: list[str], sinkgroups: list[str], get, p, out: _Out) -> list:
    mine = [s for s in sinks if p.get(f"sinks.{s}.channel") == ch]
    rows: list = []
    collectors, settings = [], {}
    group = next((g for g in sinkgroups if set(p.get(f"sinkgroups.{g}.sinks", "").split()) & set(mine)), None)
    order = mine
    if group is not None:
        members = get(f"sinkgroups.{group}.sinks", "").split()
        ptype = (get(f"sinkgroups.{group}.processor.type") or "default").lower()
        if ptype == "failover":
            prio = {s: int(get(f"sinkgroups.{group}.processor.priority.{s}") or 0) for s in members}
            order = sorted(members, key=lambda s: -prio[s])
            rows.append(("balance", "failover", f"sink group {group}: collectors in priority order"))
            penalty = get(f"sinkgroups.{group}.processor.maxpenalty")
            if penalty:
                rows.append(("max_penalty", _seconds(penalty), None))
        elif ptype == "load_balance":
            selector = (get(f"sinkgroups.{group}.processor.selector") or "round_robin").lower()
            get(f"sinkgroups.{group}.processor.backoff")
            rows.append(("balance", "random" if selector == "random" else "round_robin", f"sink group {group}"))
            timeout = get(f"sinkgroups.{group}.processor.selector.maxTimeOut")
            if timeout:
                rows.append(("max_penalty", _seconds(timeout), None))
        else:
            order = members
    elif len(mine) > 1:
        rows.append(("balance", "round_robin", f"sinks {' '.join(mine)} draw from one channel: Flume load-balances"))
    for s in order:
        addr, sink_settings = _collector(s, get)
        if addr is None:
            out.unmapped.append((f"sinks.{s}", p.get(f"sinks.{s}.type", ""), "not an Avro or Thrift sink with "
                                 "hostname and port: flume-ship ships to collectors only"))
            continue
        collectors.append(addr)
        for key, value, sink in sink_settings:
            if key in settings and settings[key][0] != value:
                rows.append((None, None, f"{key}: sink {sink} says {value}, kept {settings[key][0]} "
                             f"(one value per group)"))
                continue
            settings.setdefault(key, (value, sink))
    rows.insert(0, ("collectors", collectors, None))
    rows += [(k, v, None) for k, (v, _) in settings.items()]
    return rows


def _channel_settings(ch: str, get, p, out: _Out) -> None:
    kind = (get(f"channels.{ch}.type") or "memory").lower()
    space = get(f"channels.{ch}.minimumRequiredSpace")
    if space is not None and not any(k == "min_free" for k, _, _ in out.channel):
        out.channel.append(("min_free", int(space), f"from channel {ch}"))
    if kind == "memory":
        out.channel.append((None, None, f"channel {ch} was a memory channel: flume-ship's channel is always durable"))


def _source(src: str, several: bool, multi: bool, channels: list[str], get, p, out: _Out) -> None:
    kind = (get(f"sources.{src}.type") or "").lower()
    if kind not in ("taildir", "org.apache.flume.source.taildir.taildirsource"):
        out.unmapped.append((f"sources.{src}", p.get(f"sources.{src}.type", ""),
                             "only TAILDIR sources are mapped: flume-ship tails files"))
        return
    common: list = []
    headers_all: dict[str, str] = {}
    file_header = (get(f"sources.{src}.fileHeader") or "false").lower() == "true"
    common.append(("file_header", file_header, None if file_header else "Flume's default: no file header"))
    key = get(f"sources.{src}.fileHeaderKey")
    if key:
        common.append(("file_header_key", key, None))
    if (get(f"sources.{src}.byteOffsetHeader") or "false").lower() == "true":
        common.append(("byte_offset_header", True, None))
    if (get(f"sources.{src}.skipToEnd") or "false").lower() == "true":
        common.append(("from_end", True, None))
    idle = get(f"sources.{src}.idleTimeout")
    if idle:
        common.append(("close_inactive", _seconds(idle), None))
    common += _interceptors(src, get, p, headers_all, out)
    src_channels = (get(f"sources.{src}.channels") or "").split()
    if multi:
        stype = (get(f"sources.{src}.selector.type") or "replicating").lower()
        if stype == "multiplexing":
            header = get(f"sources.{src}.selector.header") or "flume.selector.header"
            prefix = f"sources.{src}.selector.mapping."
            mapping = {k[len(prefix):]: get(k).split() for k in list(p) if k.startswith(prefix)}
            default = (get(f"sources.{src}.selector.default") or "").split()
            if not default:
                default = src_channels[:1]
                common.append((None, None, "no selector.default: Flume drops unmapped events; here they go to "
                               f"{default}"))
            common.append(("route", {"header": header, "mapping": mapping, "default": default}, None))
        else:
            common.append(("groups", src_channels, None))
    fgs = (get(f"sources.{src}.filegroups") or "").split()
    for fg in fgs:
        spec = get(f"sources.{src}.filegroups.{fg}") or ""
        directory, _, name_re = spec.rpartition("/")
        glob = _regex_to_glob(name_re)
        rows: list = []
        if glob is None:
            rows.append(("paths", [f"{directory}/*"], f"file-name regex {name_re!r} has no glob equivalent: every "
                         "file of the directory is tailed; narrow it with exclude"))
        else:
            rows.append(("paths", [f"{directory}/{glob}"], None))
        prefix = f"sources.{src}.headers.{fg}."
        headers = dict(headers_all)
        headers.update({k[len(prefix):]: get(k) for k in list(p) if k.startswith(prefix)})
        if headers:
            rows.append(("headers", headers, None))
        name = f"{src}_{fg}" if several else fg
        out.tables.append((f"[sources.{name}]", rows + common))


def _interceptors(src: str, get, p, headers: dict, out: _Out) -> list:
    rows: list = []
    names = (get(f"sources.{src}.interceptors") or "").split()
    kinds = {}
    for name in names:
        base = f"sources.{src}.interceptors.{name}"
        kind = (get(f"{base}.type") or "").lower().rsplit("$", 1)[0]
        kinds[name] = kind
        if kind in ("timestamp", "org.apache.flume.interceptor.timestampinterceptor"):
            key = get(f"{base}.headerName")
            if key:
                rows.append(("timestamp_header_key", key, None))
            get(f"{base}.preserveExisting")
        elif kind in ("host", "org.apache.flume.interceptor.hostinterceptor"):
            key = get(f"{base}.hostHeader")
            if key:
                rows.append(("host_header_key", key, None))
            if (get(f"{base}.useIP") or "true").lower() == "true":
                rows.append(("host_header_value", "ip", "Flume's host interceptor sends the IP by default"))
            get(f"{base}.preserveExisting")
        elif kind in ("static", "org.apache.flume.interceptor.staticinterceptor"):
            headers[get(f"{base}.key") or "key"] = get(f"{base}.value") or "value"
            get(f"{base}.preserveExisting")
        elif kind in ("regex_filter", "org.apache.flume.interceptor.regexfilteringinterceptor"):
            regex = get(f"{base}.regex") or ".*"
            exclude = (get(f"{base}.excludeEvents") or "false").lower() == "true"
            rows.append(("exclude_lines" if exclude else "include_lines", [regex], None))
        elif kind in ("regex_extractor", "org.apache.flume.interceptor.regexextractorinterceptor"):
            regex = get(f"{base}.regex") or ""
            ser = (get(f"{base}.serializers") or "").split()
            names_ = [get(f"{base}.serializers.{s}.name") or s for s in ser]
            for s in ser:
                stype = get(f"{base}.serializers.{s}.type")
                if stype and "millis" in stype.lower():
                    out.unmapped.append((f"sources.{src}.interceptors.{name}.serializers.{s}.type", stype,
                                         "a millis serializer maps to event_time = { group, format }: write it "
                                         "by hand (strptime pattern, not Java's)"))
            named = _numbered_to_named(regex, names_)
            if named is None or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names_):
                out.unmapped.append((f"sources.{src}.interceptors.{name}.regex", regex,
                                     "its groups could not be matched to the serializers' names"))
            else:
                rows.append(("extract", {"regex": named}, None))
        else:
            out.unmapped.append((f"sources.{src}.interceptors.{name}.type", kind,
                                 "interceptor not supported at the edge (see docs/migration.md)"))
    if not any(k in ("timestamp", "org.apache.flume.interceptor.timestampinterceptor") for k in kinds.values()):
        rows.append(("timestamp_header", False, "no timestamp interceptor in Flume"))
    if not any(k in ("host", "org.apache.flume.interceptor.hostinterceptor") for k in kinds.values()):
        rows.append(("host_header", False, "no host interceptor in Flume"))
    return rows


def _render(out: _Out, agent: str, source_file: str) -> str:
    lines = [f"# flume-ship configuration imported from {source_file} (agent {agent}) by flume-ship import-flume.",
             "# Check it with: flume-ship validate THIS_FILE", ""]
    lines += ["[channel]", "# state_dir: unset = the default state directory (set it to keep state elsewhere)"]
    for key, value, note in out.channel:
        if note:
            lines.append(f"# {note}")
        if key:
            lines.append(f"{key} = {_toml(value)}")
    lines.append("")
    for header, rows in out.tables:
        lines.append(header)
        for key, value, note in rows:
            if note:
                lines.append(f"# {note}")
            if key:
                lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    if out.unmapped:
        lines.append("# Not mapped (each Flume key, its value, and why):")
        for key, value, why in out.unmapped:
            lines.append(f"# {agent}.{key} = {value}  -- {why}")
    return "\n".join(lines) + "\n"
