"""Flags shared by several commands, declared once: each flag that sets a configuration key takes its
help text and default from that key's declaration in :mod:`shipper.agent.config` (:func:`declared`),
and ``tail`` maps the flags a user gave onto the configuration by the same declaration
(``shipper.cli.tail.overlay_from_flags``). ``send`` and ``ping`` build their transport options from the same
``DeliverySection`` fields through the same function as the agent (``client_options_of``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional

import typer

from shipper.agent.config import DeliverySection, client_options_of, parse_size
from shipper.cli.app import report
from shipper.errors import ConfigFileError

TRANSPORT_HELP = "Transport"
DELIVERY_HELP = "Delivery"
SOURCE_HELP = "Files and events"
OPS_HELP = "Operations"


def _field(section: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(section) if f.name == name)


def _size_text(value: int) -> str:
    for unit, n in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value and value % n == 0:
            return f"{value // n}{unit}"
    return str(value)


def declared(section: type, name: str, *flags: str, panel: str | None = None, help: str | None = None,
             default: Any = dataclasses.MISSING, **typer_kw) -> Any:
    """The typer option for configuration key ``section.name``: its flag, help text and default
    come from the key's declaration (``help``/``default`` override them where the flag differs,
    e.g. a ``--no-...`` flag that turns a default-on key off)."""
    f = _field(section, name)
    meta = f.metadata
    text = help if help is not None else meta["help"]
    if default is dataclasses.MISSING:
        if meta.get("kind") == "size":  # given as text ("4M"), converted with the file's values
            default = _size_text(f.default)
        elif f.default is dataclasses.MISSING:  # a repeatable flag: a list, empty unless given
            default = list(f.default_factory())
        else:
            default = f.default
    return typer.Option(default, *(flags or (meta["flag"],)), help=text, rich_help_panel=panel, **typer_kw)


def _transport(name: str) -> Any:
    return declared(DeliverySection, name, panel=TRANSPORT_HELP)


# The transport flags of send, ping and tail, each from its [delivery] key: (parameter, type, option).
TRANSPORT_FLAGS = [
    ("compress", str, _transport("compress")),
    ("level", int, _transport("compression_level")),
    ("tls", bool, _transport("tls")),
    ("tls_ca", Optional[str], _transport("tls_ca")),
    ("tls_insecure", bool, _transport("tls_insecure")),
    ("tls_name", Optional[str], _transport("tls_server_name")),
    ("tls_cert", Optional[str], _transport("tls_cert")),
    ("tls_key", Optional[str], _transport("tls_key")),
    ("layering", str, _transport("tls_layering")),
    ("connect_timeout", float, _transport("connect_timeout")),
    ("request_timeout", float, _transport("request_timeout")),
]
OPT_COMPRESS = TRANSPORT_FLAGS[0][2]
OPT_LAYERING = TRANSPORT_FLAGS[8][2]


def with_flags(flags: list, into: str, build: Callable | None, before: str | None = None) -> Callable:
    """Give a command a group of flags ``(parameter, type, option)``, inserted before parameter
    ``before`` (else last). With ``build``, the command gets them as one argument ``into``, built
    by ``build(**values)``; without, it reads them from its context."""

    def decorate(command: Callable) -> Callable:
        sig = inspect.signature(command)
        own = [p for p in sig.parameters.values() if p.name != into]
        added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=kind)
                 for name, kind, option in flags]
        at = next((i for i, p in enumerate(own) if p.name == before), len(own))

        @functools.wraps(command)
        def run(*args, **kwargs):
            values = {name: kwargs.pop(name) for name, _, _ in flags}
            if build is not None:
                kwargs[into] = build(**values)
            return command(*args, **kwargs)

        run.__signature__ = sig.replace(parameters=own[:at] + added + own[at:])
        return run

    return decorate


def with_transport_flags(before: str | None = None, *, build: bool = True) -> Callable:
    """Give a command the transport flags (inserted before parameter ``before``, else last).

    With ``build``, the command gets them as one ``transport: ClientOptions`` argument, built the
    way the agent builds its own (:func:`client_options`); without, it reads them from its context
    (``tail`` lays them over the config file)."""
    return with_flags(TRANSPORT_FLAGS, "transport", client_options if build else None, before)


def client_options(compress, level, tls, tls_ca, tls_insecure, tls_name, tls_cert, tls_key, layering,
                   connect_timeout, request_timeout):
    """The transport flags as a DeliverySection, built into ClientOptions by the agent's own function."""
    compression_flag(compress)
    if tls_insecure and tls_ca:
        raise typer.BadParameter("contradicts --tls-ca (verify with that CA, or do not verify): give one of them",
                                 param_hint="--tls-insecure")
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    section = DeliverySection(compress=compress.lower(), compression_level=level, tls=tls, tls_ca=tls_ca,
                              tls_insecure=tls_insecure, tls_server_name=tls_name, tls_cert=tls_cert,
                              tls_key=tls_key, tls_layering=layering, connect_timeout=connect_timeout,
                              request_timeout=request_timeout)
    return client_options_of(section)


def compression_flag(text: str) -> Optional[str]:
    value = text.lower()
    if value not in ("none", "deflate"):
        raise typer.BadParameter("use none or deflate", param_hint="--compress")
    return None if value == "none" else value


def size_flag(text: str, flag: str = "--roll-size") -> int:
    """A size flag of a command without a config file (``collect --roll-size``, its limits), as the file's sizes."""
    try:
        value = parse_size(text)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=flag) from None
    if value <= 0:
        raise typer.BadParameter("must be greater than 0", param_hint=flag)
    return value


def header_flags(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not K=V", param_hint="--header")
        headers[key] = value
    return headers


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
