"""``flume-ship tail`` (the agent) and ``validate`` (its configuration file)."""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Optional

import typer

from shipper.agent.config import SECTIONS, AgentSection, ChannelSection, DeliverySection, SourceSection
from shipper.cli.app import app, report
from shipper.cli.options import (
    DELIVERY_HELP, OPS_HELP, OPT_CONFIG, SOURCE_HELP, declared, header_flags, with_transport_flags,
)
from shipper.errors import ConfigError, ConfigFileError, InputError


def _flag_targets() -> dict[str, tuple[str, str]]:
    """Every flag declared in the configuration -> (section, key); "source" for a source's keys."""
    targets = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("flag"):
                targets[f.metadata["flag"]] = (section, f.name)
    for f in dataclasses.fields(SourceSection):
        if f.metadata.get("flag"):
            targets[f.metadata["flag"]] = ("source", f.name)
    return targets


_TARGETS = _flag_targets()


def _flag_value(flag: str, value):
    """A flag's value as the configuration key takes it."""
    if flag == "--to":
        return [p.strip() for p in value.split(",") if p.strip()]
    if flag == "--compress":
        return value.lower()
    if flag.startswith("--no-"):  # --no-host-header turns host_header off
        return not value
    return value


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # compared by name: typer may carry its own click
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def overlay_from_flags(ctx: typer.Context, paths: Optional[list[str]]):
    """The flags the user gave (not typer's defaults), laid over the config file by the keys that
    declare them."""
    from shipper.agent.config import Overlay

    overlay = Overlay()
    for param in ctx.command.params:
        if not param.opts or not _given(ctx, param.name):
            continue
        flag = max(param.opts, key=len)
        target = _TARGETS.get(flag)
        if target is None or flag == "--header":  # --config, --once, --deadline: not configuration keys
            continue
        section, key = target
        value = _flag_value(flag, ctx.params[param.name])
        if section == "source":
            overlay.set_source(key, value, flag)
        else:
            overlay.set(section, key, value, flag)
    if ctx.params.get("header"):
        overlay.extra_headers = header_flags(ctx.params["header"])
    if paths:
        overlay.paths = list(paths)
    return overlay


@app.command("tail")
@with_transport_flags(before="header", build=False)
def tail_cmd(
    ctx: typer.Context,
    paths: Optional[list[str]] = typer.Argument(None, help="Files or globs to tail (`*`, `**`); quote globs so "
                                                "the shell leaves them to flume-ship, which also finds files created "
                                                "later. Given here, they replace the config file's sources."),
    config: Optional[str] = OPT_CONFIG,
    to: Optional[str] = declared(DeliverySection, "collectors", "--to", panel=DELIVERY_HELP, default=None,
                                 help="Collectors as HOST:PORT[,HOST:PORT...]: Flume AvroSources or flume-ship "
                                 "collect; thrift://HOST:PORT[?protocol=binary] names a Flume ThriftSource, and "
                                 "both kinds mix in one group (or delivery.collectors in the config file)."),
    state_dir: Optional[str] = declared(ChannelSection, "state_dir", envvar="FLUME_SHIP_STATE_DIR"),
    batch_size: int = declared(DeliverySection, "batch_size", min=1, panel=DELIVERY_HELP),
    batch_bytes: str = declared(DeliverySection, "batch_bytes", panel=DELIVERY_HELP),
    linger: float = declared(DeliverySection, "linger", min=0.0, panel=DELIVERY_HELP),
    sinks: int = declared(DeliverySection, "sinks", min=1, max=64, panel=DELIVERY_HELP),
    in_flight: int = declared(DeliverySection, "in_flight", min=1, max=64, panel=DELIVERY_HELP),
    balance: str = declared(DeliverySection, "balance", panel=DELIVERY_HELP),
    max_penalty: float = declared(DeliverySection, "max_penalty", min=0.0, panel=DELIVERY_HELP),
    backoff_max: float = declared(DeliverySection, "backoff_max", min=0.1, panel=DELIVERY_HELP),
    busy_penalty: float = declared(DeliverySection, "busy_penalty", min=0.1, panel=DELIVERY_HELP),
    header: list[str] = declared(SourceSection, "headers", panel=SOURCE_HELP, default=[],
                                 help="K=V header added to every event (repeatable)."),
    no_timestamp: bool = declared(SourceSection, "timestamp_header", panel=SOURCE_HELP, default=False,
                                  help="Leave out the `timestamp` header (ms since the epoch)."),
    no_host: bool = declared(SourceSection, "host_header", panel=SOURCE_HELP, default=False,
                             help="Leave out the `host` header."),
    no_file: bool = declared(SourceSection, "file_header", panel=SOURCE_HELP, default=False,
                             help="Leave out the `file` header (the path)."),
    event_id: bool = declared(SourceSection, "event_id", panel=SOURCE_HELP),
    from_end: bool = declared(SourceSection, "from_end", panel=SOURCE_HELP),
    multiline: Optional[str] = declared(SourceSection, "multiline", panel=SOURCE_HELP,
                                        help="Join the lines of one event: java, python or go (stack traces, "
                                        "tracebacks, panics); own rules in the config file's multiline table."),
    include_lines: list[str] = declared(SourceSection, "include_lines", panel=SOURCE_HELP),
    exclude_lines: list[str] = declared(SourceSection, "exclude_lines", panel=SOURCE_HELP),
    exclude: list[str] = declared(SourceSection, "exclude", panel=SOURCE_HELP),
    byte_offset_header: bool = declared(SourceSection, "byte_offset_header", panel=SOURCE_HELP),
    max_line: str = declared(SourceSection, "max_line_bytes", panel=SOURCE_HELP),
    capacity: str = declared(ChannelSection, "capacity"),
    min_free: str = declared(ChannelSection, "min_free"),
    ack_sync_interval: float = declared(ChannelSection, "ack_sync_interval"),
    drain_timeout: float = declared(AgentSection, "drain_timeout", min=0.0),
    once: bool = typer.Option(False, "--once", help="Read every file to its current end, ship everything, "
                              "then exit 0 (for cron)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", min=0.1, help="With --once: exit 6 if "
                                             "delivery has not finished after this many seconds (reading and the "
                                             "drain included)."),
    metrics_listen: Optional[str] = declared(AgentSection, "metrics_listen", envvar="FLUME_SHIP_METRICS_LISTEN",
                                             panel=OPS_HELP),
    stall_timeout: float = declared(AgentSection, "stall_timeout", min=0.1, panel=OPS_HELP),
    status_interval: float = declared(AgentSection, "status_interval", min=0.1, panel=OPS_HELP),
    progress_interval: float = declared(AgentSection, "progress_interval", min=0.0, panel=OPS_HELP),
    give_up_after: float = declared(AgentSection, "give_up_after", min=0.0, panel=DELIVERY_HELP),
    max_open_files: int = declared(AgentSection, "max_open_files", min=0, panel=SOURCE_HELP),
) -> None:
    """Tail files into the durable channel and ship them to Flume Avro collectors (the main job).

    Runs until SIGTERM/SIGINT, then finishes the batches in flight and exits 0 (a second signal
    exits 130 at once; nothing unacknowledged is lost either way). SIGHUP re-reads the --config
    file (sources and collectors added, changed or removed) without losing or repeating events.
    With --once, exits 0 only when every line of every matched file was acknowledged; 6 when
    --deadline passes first (it bounds the whole run), 7 when a path matches no regular file or a
    file cannot be read, 8 when stopped by a signal with events still queued, 3 when a batch the
    collectors rejected max_rejects times was dead-lettered.
    While no collector accepts, events wait in the channel and delivery is retried for ever, unless
    --give-up-after is set: then 10 when nothing was acknowledged for that long.
    Exit 2 for a bad flag or configuration, 4 when another flume-ship uses the same --state-dir.

    Example: flume-ship tail '/var/log/app/*.log' --to collector1:4141,collector2:4141

    Example (cron): flume-ship tail --once --deadline 240 --config /etc/flume-ship/flume-ship.toml
    """
    from shipper.agent.core import Agent
    from shipper.agent.config import default_config_path, load

    if deadline is not None and not once:
        raise typer.BadParameter("only makes sense with --once", param_hint="--deadline")
    if deadline is not None and not math.isfinite(deadline):
        raise typer.BadParameter("must be a finite number of seconds", param_hint="--deadline")
    path = config if config is not None else default_config_path()
    overlay = overlay_from_flags(ctx, paths)
    try:
        cfg = load(path or None, overlay)
    except ConfigFileError as err:
        raise report(err) from None
    agent = Agent(cfg, reload=lambda: load(path or None, overlay), once=once, deadline=deadline)
    agent.install_signal_handlers()
    raise typer.Exit(agent.run())


@app.command("validate")
def validate_cmd(
    config: Optional[str] = typer.Argument(None, help="The TOML file to check (default: --config, "
                                           "$FLUME_SHIP_CONFIG, or /etc/flume-ship/flume-ship.toml)."),
    config_opt: Optional[str] = typer.Option(None, "--config", help="Same as the argument."),
) -> None:
    """Check a configuration file: every key, type and value, collector addresses, overlapping sources.

    Prints each problem as FILE: KEY: WHY and exits 2, or a summary of what would run and exits 0.
    Nothing is started and no collector is contacted (use flume-ship ping for that).

    Example: flume-ship validate /etc/flume-ship/flume-ship.toml
    """
    from shipper.agent.config import default_config_path, load

    path = config or config_opt or default_config_path()
    if not path:
        raise report(ConfigError("no configuration file: give one, or create /etc/flume-ship/flume-ship.toml"))
    try:
        cfg = load(path)
    except ConfigFileError as err:
        raise report(err) from None
    typer.echo(f"{path}: OK")
    typer.echo(f"  state dir: {cfg.state_path()}")
    if cfg.groups:
        for name, g in cfg.groups:
            typer.echo(f"  group {name} ({g.balance}): {', '.join(g.collectors)}")
    else:
        typer.echo(f"  collectors ({cfg.delivery.balance}): {', '.join(cfg.delivery.collectors)}")
    for s in cfg.sources:
        headers = ", ".join(f"{k}={v}" for k, v in s.headers)
        typer.echo(f"  source {s.name}: {' '.join(s.paths)}" + (f" (headers {headers})" if headers else ""))
        ml = s.multiline
        rules = [f"multiline {ml if isinstance(ml, str) else dict(ml).get('preset', 'rule')}"] if ml else []
        rules += [f"{len(v)} {k}" for k, v in (("include_lines", s.include_lines),
                                               ("exclude_lines", s.exclude_lines), ("exclude", s.exclude)) if v]
        rules += [k for k in ("extract", "event_time", "encoding") if getattr(s, k)]
        if rules:
            typer.echo(f"    rules: {', '.join(rules)} (try them: flume-ship test-source {s.name} SAMPLE)")
    if cfg.agent.metrics_listen:
        typer.echo(f"  metrics: http://{cfg.agent.metrics_listen}/metrics")


@app.command("test-source")
def test_source_cmd(
    ctx: typer.Context,
    source: str = typer.Argument("default", help="The source's name: NAME of a sources.NAME table in the config file."),
    file: str = typer.Argument("-", help="A sample of the log to cut (default: stdin)."),
    config: Optional[str] = OPT_CONFIG,
    multiline: Optional[str] = typer.Option(None, "--multiline", help="Try this preset (java, python, go) "
                                            "instead of the source's multiline rule."),
    include_lines: list[str] = typer.Option([], "--include-lines", help="REGEX (repeatable): try these instead."),
    exclude_lines: list[str] = typer.Option([], "--exclude-lines", help="REGEX (repeatable): try these instead."),
) -> None:
    """Print the events, headers and drops a source's rules make of FILE (or stdin); ship nothing.

    The end of the input counts as the end of the file (what is held is shipped, as with
    tail --once), so a multiline rule can be written against a saved sample. Exit 0, 2 for a bad
    rule or configuration (each problem printed), 7 when FILE cannot be read.

    Example: flume-ship test-source app sample.log --config /etc/flume-ship/flume-ship.toml
    """
    from shipper.agent.config import Overlay, default_config_path, load_source
    from shipper.tail.preview import preview, render

    overlay = Overlay()
    for param in ctx.command.params:
        if param.name in ("multiline", "include_lines", "exclude_lines") and _given(ctx, param.name):
            overlay.set_source(param.name, ctx.params[param.name], max(param.opts, key=len))
    path = config if config is not None else default_config_path()
    try:
        src = load_source(path or None, source, overlay)
        options = src.tail_options()
    except ConfigFileError as err:
        raise report(err) from None
    try:
        if file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(file, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise report(InputError(f"cannot read {file}: {exc.strerror or exc} (give a readable file, "
                                "or - for stdin)")) from None
    rows, summary = preview(data, options, file_name="<stdin>" if file == "-" else file)
    for line in render(rows, summary):
        typer.echo(line)
