"""``flume-ship tail`` (the agent) and ``validate`` (its configuration file)."""

from __future__ import annotations

from typing import Optional

import typer

from shipper.cli.app import app, report
from shipper.cli.options import (
    DELIVERY_HELP, OPS_HELP, OPT_COMPRESS, OPT_CONFIG, OPT_CONNECT_TIMEOUT, OPT_LAYERING, OPT_LEVEL,
    OPT_REQUEST_TIMEOUT, OPT_TLS, OPT_TLS_CA, OPT_TLS_INSECURE, OPT_TLS_NAME, SOURCE_HELP, header_flags,
)
from shipper.errors import ConfigError, ConfigFileError


# tail's flag parameters -> where they go in the configuration (section, key, how to convert).
_AGENT_FLAGS = {
    "state_dir": ("channel", "state_dir", None),
    "capacity": ("channel", "capacity", None),
    "min_free": ("channel", "min_free", None),
    "to": ("delivery", "collectors", lambda v: [p.strip() for p in v.split(",") if p.strip()]),
    "batch_size": ("delivery", "batch_size", None),
    "batch_bytes": ("delivery", "batch_bytes", None),
    "linger": ("delivery", "linger", None),
    "sinks": ("delivery", "sinks", None),
    "balance": ("delivery", "balance", None),
    "max_penalty": ("delivery", "max_penalty", None),
    "backoff_max": ("delivery", "backoff_max", None),
    "compress": ("delivery", "compress", str.lower),
    "level": ("delivery", "compression_level", None),
    "tls": ("delivery", "tls", None),
    "tls_ca": ("delivery", "tls_ca", None),
    "tls_insecure": ("delivery", "tls_insecure", None),
    "tls_name": ("delivery", "tls_server_name", None),
    "layering": ("delivery", "tls_layering", None),
    "connect_timeout": ("delivery", "connect_timeout", None),
    "request_timeout": ("delivery", "request_timeout", None),
    "drain_timeout": ("agent", "drain_timeout", None),
    "metrics_listen": ("agent", "metrics_listen", None),
    "stall_timeout": ("agent", "stall_timeout", None),
    "status_interval": ("agent", "status_interval", None),
    "max_open_files": ("agent", "max_open_files", None),
}
_SOURCE_FLAGS = {
    "from_end": ("from_end", None),
    "max_line": ("max_line_bytes", None),
    "no_timestamp": ("timestamp_header", lambda v: not v),
    "no_host": ("host_header", lambda v: not v),
    "no_file": ("file_header", lambda v: not v),
    "event_id": ("event_id", None),
}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # compared by name: typer may carry its own click
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _flag_of(ctx: typer.Context, name: str) -> str:
    for p in ctx.command.params:
        if p.name == name:
            return max(p.opts, key=len) if p.opts else name
    return name


def overlay_from_flags(ctx: typer.Context, paths: Optional[list[str]]):
    """The flags the user gave (not typer's defaults), as an overlay on the config file."""
    from shipper.agent.config import Overlay

    overlay = Overlay()
    params = ctx.params
    for name, (section, key, conv) in _AGENT_FLAGS.items():
        if _given(ctx, name):
            value = params[name]
            overlay.set(section, key, conv(value) if conv else value, _flag_of(ctx, name))
    for name, (key, conv) in _SOURCE_FLAGS.items():
        if _given(ctx, name):
            value = params[name]
            overlay.set_source(key, conv(value) if conv else value, _flag_of(ctx, name))
    if params.get("header"):
        overlay.extra_headers = header_flags(params["header"])
    if paths:
        overlay.paths = list(paths)
    return overlay


@app.command("tail")
def tail_cmd(
    ctx: typer.Context,
    paths: Optional[list[str]] = typer.Argument(None, help="Files or globs to tail (`*`, `**`); quote globs so "
                                                "the shell leaves them to flume-ship, which also finds files created "
                                                "later. Given here, they replace the config file's sources."),
    config: Optional[str] = OPT_CONFIG,
    to: Optional[str] = typer.Option(None, "--to", help="Collectors as HOST:PORT[,HOST:PORT...]: Flume AvroSources "
                                     "or flume-ship collect (or delivery.collectors in the config file).",
                                     rich_help_panel=DELIVERY_HELP),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", envvar="FLUME_SHIP_STATE_DIR",
                                            help="Where the channel and file offsets live (locked: one agent "
                                            "per directory). Default: /var/lib/flume-ship as root, else "
                                            "$XDG_STATE_HOME/flume-ship or ~/.local/state/flume-ship."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Most events in one appendBatch.",
                                   rich_help_panel=DELIVERY_HELP),
    batch_bytes: str = typer.Option("4M", "--batch-bytes", help="Most event bytes in one appendBatch.",
                                    rich_help_panel=DELIVERY_HELP),
    linger: float = typer.Option(0.2, "--linger", min=0.0, help="Seconds a partial batch waits for more "
                                 "events before it is sent.", rich_help_panel=DELIVERY_HELP),
    sinks: int = typer.Option(1, "--sinks", min=1, max=64, help="Batches in flight at once (with more than 1, "
                              "batches may arrive out of order).", rich_help_panel=DELIVERY_HELP),
    balance: str = typer.Option("failover", "--balance", help="failover (listed order, the first healthy "
                                "collector takes all), round_robin or random.", rich_help_panel=DELIVERY_HELP),
    max_penalty: float = typer.Option(30.0, "--max-penalty", min=0.0, help="Longest time in seconds a failing "
                                      "collector is skipped: min(this, 2^failures).",
                                      rich_help_panel=DELIVERY_HELP),
    backoff_max: float = typer.Option(30.0, "--backoff-max", min=0.1, help="Cap in seconds on the wait "
                                      "between retries while no collector is healthy (exponential, full "
                                      "jitter; retries never stop).", rich_help_panel=DELIVERY_HELP),
    compress: str = OPT_COMPRESS,
    level: int = OPT_LEVEL,
    tls: bool = OPT_TLS,
    tls_ca: Optional[str] = OPT_TLS_CA,
    tls_insecure: bool = OPT_TLS_INSECURE,
    tls_name: Optional[str] = OPT_TLS_NAME,
    layering: str = OPT_LAYERING,
    connect_timeout: float = OPT_CONNECT_TIMEOUT,
    request_timeout: float = OPT_REQUEST_TIMEOUT,
    header: list[str] = typer.Option([], "--header", help="K=V header added to every event (repeatable).",
                                     rich_help_panel=SOURCE_HELP),
    no_timestamp: bool = typer.Option(False, "--no-timestamp-header", help="Leave out the `timestamp` header "
                                      "(ms since the epoch).", rich_help_panel=SOURCE_HELP),
    no_host: bool = typer.Option(False, "--no-host-header", help="Leave out the `host` header.",
                                 rich_help_panel=SOURCE_HELP),
    no_file: bool = typer.Option(False, "--no-file-header", help="Leave out the `file` header (the path).",
                                 rich_help_panel=SOURCE_HELP),
    event_id: bool = typer.Option(False, "--event-id", help="Add an `id` header made of the file identity and "
                                  "byte offset: stable across re-sends, for receiver-side dedup.",
                                  rich_help_panel=SOURCE_HELP),
    from_end: bool = typer.Option(False, "--from-end", help="Start files seen for the first time at their end "
                                  "(default: at their beginning).", rich_help_panel=SOURCE_HELP),
    max_line: str = typer.Option("2M", "--max-line-bytes", help="A longer line is split into events of this "
                                 "size, marked with a `split` header, and counted.", rich_help_panel=SOURCE_HELP),
    capacity: str = typer.Option("1G", "--capacity", help="Channel capacity in bytes; when full, reading pauses "
                                 "(the files are the buffer)."),
    min_free: str = typer.Option("500M", "--min-free", help="Pause reading while the state directory's "
                                 "filesystem has less free space than this."),
    drain_timeout: float = typer.Option(10.0, "--drain-timeout", min=0.0, help="On SIGTERM/SIGINT, seconds to "
                                        "finish in-flight batches before giving them back to the channel."),
    once: bool = typer.Option(False, "--once", help="Read every file to its current end, ship everything, "
                              "then exit 0 (for cron)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", min=0.1, help="With --once: exit 6 if "
                                             "delivery has not finished after this many seconds."),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", envvar="FLUME_SHIP_METRICS_LISTEN", help="HOST:PORT to serve Prometheus "
                                                 "/metrics and /health on (port 0: any free port, logged).",
                                                 rich_help_panel=OPS_HELP),
    stall_timeout: float = typer.Option(300.0, "--stall-timeout", min=0.1, help="/health answers 503 when events "
                                        "are queued and nothing was acknowledged for this many seconds.",
                                        rich_help_panel=OPS_HELP),
    status_interval: float = typer.Option(2.0, "--status-interval", min=0.1, help="Seconds between rewrites of "
                                          "status.json in the state directory (read by flume-ship status).",
                                          rich_help_panel=OPS_HELP),
    max_open_files: int = typer.Option(0, "--max-open-files", min=0, help="Most tailed files open at once; "
                                       "the others are read in turns (0: the open-file limit, raised to its "
                                       "hard maximum at start, less a reserve).", rich_help_panel=SOURCE_HELP),
) -> None:
    """Tail files into the durable channel and ship them to Flume Avro collectors (the main job).

    Runs until SIGTERM/SIGINT, then finishes the batches in flight and exits 0 (a second signal
    exits 130 at once; nothing unacknowledged is lost either way). SIGHUP re-reads the --config
    file (sources and collectors added, changed or removed) without losing or repeating events.
    With --once, exits 0 when everything read is acknowledged, 6 when --deadline passes first.
    While no collector accepts, events wait in the channel and delivery is retried for ever.
    Exit 2 for a bad flag or configuration, 4 when another flume-ship uses the same --state-dir.
    """
    from shipper.agent.core import Agent
    from shipper.agent.config import default_config_path, load

    if deadline is not None and not once:
        raise typer.BadParameter("only makes sense with --once", param_hint="--deadline")
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
    config: Optional[str] = typer.Argument(None, help="The TOML file to check [default: --config, "
                                           "$FLUME_SHIP_CONFIG, or /etc/flume-ship/flume-ship.toml]."),
    config_opt: Optional[str] = typer.Option(None, "--config", help="Same as the argument."),
) -> None:
    """Check a configuration file: every key, type and value, collector addresses, overlapping sources.

    Prints each problem as FILE: KEY: WHY and exits 2, or a summary of what would run and exits 0.
    Nothing is started and no collector is contacted (use flume-ship ping for that).
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
    typer.echo(f"  collectors ({cfg.delivery.balance}): {', '.join(cfg.delivery.collectors)}")
    for s in cfg.sources:
        headers = ", ".join(f"{k}={v}" for k, v in s.headers)
        typer.echo(f"  source {s.name}: {' '.join(s.paths)}" + (f" (headers {headers})" if headers else ""))
    if cfg.agent.metrics_listen:
        typer.echo(f"  metrics: http://{cfg.agent.metrics_listen}/metrics")
