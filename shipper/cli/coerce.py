"""Typer's value coercion without pydantic for the values a command line mostly carries.

typer 0.29 coerces every parameter's value (the defaults included) through a pydantic
``TypeAdapter`` built on first use: importing pydantic and building the ~40 adapters of
``flume-ship tail`` cost ~0.05 CPU s of every start (a third of the imports), before a line
is read, on every cron ``--once`` run.

:func:`fast_coercion` gives each parameter a coercer that returns, itself, the values whose
result is not in doubt, and hands everything else to typer's own (pydantic) coercion, built
only then:

* ``None``, for any parameter: what typer's coercion returns for it (``()`` for a multi-value
  parameter);
* a ``str`` for a ``str`` parameter, ``str`` items for a ``list[str]`` one (as a list);
* an ``int``/``float`` value of the parameter's exact type, or a plain decimal string
  (``-?[0-9]+`` for ``int``, ``-?[0-9]+(.[0-9]+)?`` for ``float``), inside the parameter's
  ``min``/``max``.

Out-of-range numbers, other spellings (``1e3``, `` 5``, ``nan``), clamps, parsers, enums, paths,
files and bools given as text all take typer's path, so every error message stays typer's.
"""

from __future__ import annotations

import re

_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class _Coercer:
    """Duck-typed stand-in for typer's ``RuntimeParam`` (its only caller uses ``coerce``)."""

    __slots__ = ("_param", "_kind", "_min", "_max", "_slow")

    def __init__(self, param, kind: str) -> None:
        info = param.type_descriptor.parameter_info
        self._param = param
        self._kind = kind
        self._min, self._max = info.min, info.max
        self._slow = None

    def coerce(self, value, param, ctx):
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        kind = self._kind
        if kind == "str" and not multi and type(value) is str:
            return value
        if kind == "list[str]" and multi and isinstance(value, (list, tuple)) \
                and all(type(v) is str for v in value):
            return list(value)
        if kind in ("int", "float") and not multi:
            number = self._number(value, kind)
            if number is not None:
                return number
        return self._typer().coerce(value, param=param, ctx=ctx)

    def _number(self, value, kind: str):
        number_type = int if kind == "int" else float
        if type(value) is number_type:
            number = value
        elif type(value) is str and (_INT if kind == "int" else _FLOAT).fullmatch(value):
            number = number_type(value)
        else:
            return None
        if (self._min is not None and number < self._min) or (self._max is not None and number > self._max):
            return None  # typer's message says what the range is
        return number

    def _typer(self):
        if self._slow is None:
            from typer._coercion import build_runtime_param

            self._slow = build_runtime_param(self._param.type_descriptor)
        return self._slow


def _kind(param) -> str:
    """What the fast path may coerce for ``param``: ``""`` for nothing but ``None``."""
    desc = param.type_descriptor
    if desc.file_annotation is not None:
        return ""
    info = desc.parameter_info
    if info.parser is not None or getattr(info, "click_type", None) is not None or info.clamp:
        return ""
    ann = desc.annotation
    if ann is str:
        return "str"
    if ann is int or ann is float:
        return ann.__name__
    if ann == list[str]:
        return "list[str]"
    return ""


def _install(param):
    if getattr(param, "type_descriptor", None) is not None and getattr(param, "_runtime_param", False) is None:
        param._runtime_param = _Coercer(param, _kind(param))
    return param


def fast_coercion(command):
    """Give every parameter of ``command`` and its sub-commands the coercer above, where its
    type is one it knows; the others keep typer's. Returns ``command``."""
    for param in command.params:
        _install(param)
    if not getattr(command, "_fast_coercion", False):
        command._fast_coercion = True
        made = command.get_help_option

        def help_option(ctx):  # click makes --help anew for each context
            return _install(made(ctx))

        command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        fast_coercion(sub)
    return command
