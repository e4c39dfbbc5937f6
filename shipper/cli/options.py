"""Flags and flag parsers shared by several commands: transport options, headers, the state directory."""

from __future__ import annotations

from typing import Optional

import typer

from shipper.cli.app import report
from shipper.errors import ConfigFileError


TRANSPORT_HELP = "Transport"
OPT_COMPRESS = typer.Option(
    "none", "--compress", help="Compression on the wire: none or deflate (Flume's compression-type). "
    "Both ends must agree: nothing on the wire negotiates it.", rich_help_panel=TRANSPORT_HELP
)
OPT_LAYERING = typer.Option(
    "zlib-outside", "--tls-layering", help="With TLS and deflate together: zlib-outside (zlib carries TLS, "
    "Flume >= 1.10) or tls-outside (TLS carries zlib, Flume <= 1.9).", rich_help_panel=TRANSPORT_HELP
)
OPT_TLS = typer.Option(False, "--tls", help="Use TLS and verify the collector's certificate (system CA store "
                        "unless --tls-ca).", rich_help_panel=TRANSPORT_HELP)
OPT_TLS_CA = typer.Option(None, "--tls-ca", help="CA bundle (PEM) to verify the collector's certificate "
                           "with; implies --tls.", rich_help_panel=TRANSPORT_HELP)
OPT_TLS_INSECURE = typer.Option(False, "--tls-insecure", help="Use TLS WITHOUT verifying the certificate "
                                 "(like Flume's trust-all-certs); implies --tls. For tests only.",
                                 rich_help_panel=TRANSPORT_HELP)
OPT_TLS_NAME = typer.Option(None, "--tls-server-name", help="Name to verify in the certificate and send as "
                             "SNI (default: the host of the address).", rich_help_panel=TRANSPORT_HELP)
OPT_CONNECT_TIMEOUT = typer.Option(5.0, "--connect-timeout", help="Seconds for the TCP connect and the TLS "
                                    "handshake.", rich_help_panel=TRANSPORT_HELP)
OPT_REQUEST_TIMEOUT = typer.Option(20.0, "--request-timeout", help="Seconds for each call's reply; the first "
                                    "call of a connection includes the Avro handshake.",
                                    rich_help_panel=TRANSPORT_HELP)
OPT_LEVEL = typer.Option(6, "--compression-level", help="zlib level 0-9 for --compress deflate.",
                          rich_help_panel=TRANSPORT_HELP)


def client_options(compress, level, tls, tls_ca, tls_insecure, tls_name, layering, connect_timeout, request_timeout):
    from shipper.transport import ClientOptions, TLSOptions

    tls_options = None
    if tls or tls_ca or tls_insecure:
        tls_options = TLSOptions(ca_file=tls_ca, insecure=tls_insecure, server_name=tls_name)
    return ClientOptions(
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        compress=compression_flag(compress),
        compression_level=level,
        tls=tls_options,
        tls_layering=layering,
    )


def compression_flag(text: str) -> Optional[str]:
    value = text.lower()
    if value not in ("none", "deflate"):
        raise typer.BadParameter("use none or deflate", param_hint="--compress")
    return None if value == "none" else value


def size_flag(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size like 64M or 1G", param_hint="--roll-size") from None
    if value <= 0:
        raise typer.BadParameter("must be greater than 0", param_hint="--roll-size")
    return value


def header_flags(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not K=V", param_hint="--header")
        headers[key] = value
    return headers


DELIVERY_HELP = "Delivery"
SOURCE_HELP = "Files and events"
OPS_HELP = "Operations"
OPT_CONFIG = typer.Option(None, "--config", envvar="FLUME_SHIP_CONFIG", help="TOML configuration file "
                           "(docs/configuration.md) [default: /etc/flume-ship/flume-ship.toml when it exists]. "
                           "Flags given on the command line override it.", rich_help_panel=OPS_HELP)


def state_dir_from_config(config: Optional[str]) -> str:
    from shipper.agent.config import default_config_path, load_raw
    from shipper.channel.statedir import default_state_dir

    path = config or default_config_path()
    if path:
        try:
            value = load_raw(path).get("channel", {}).get("state_dir")
        except ConfigFileError as err:
            raise report(err) from None
        if isinstance(value, str) and value:
            return value
    return str(default_state_dir())
