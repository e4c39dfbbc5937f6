"""Click's usage errors in our one error style.

typer/click report a bad flag, a missing argument or a bad value with a usage line and a boxed
panel; everything else flume-ship says goes through :func:`shipper.cli.app.report` as
``flume-ship: error: WHAT; WHAT TO DO``. :func:`usage_line` turns a click exception into that one
line, so a script (or a person reading a journal) sees a single style, with the usage exit code
(2) documented in docs/operations.md. ``--help`` is untouched: it stays rich.

The text comes from click's own message (``No such option: --bogus Did you mean --batch?``,
``Missing argument 'FILE'.``, ``Invalid value for '--batch-size': ...``), first letter lowered, end
period dropped, typer's suggestion kept; the command path says where, and the hint says where to
look (``see 'flume-ship tail --help'``).
"""

from __future__ import annotations

import re


def usage_line(err, fallback: str = "flume-ship") -> str:
    """One line (without the ``flume-ship: error:`` prefix) for a click ``ClickException``;
    ``fallback`` is the command path when click did not attach its context (an option missing its
    value is found by the parser, which has none)."""
    message = " ".join(str(err.format_message()).split())  # click may wrap or pad a long message
    message = re.sub(r"\.?\s*(?:Did you mean (.*?)\??|\(Possible options: (.*)\))$",
                     lambda m: f" (did you mean {m.group(1) or m.group(2).replace(', ', ' or ')}?)", message)
    message = message.rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    message = _with_value(err, message)
    ctx = getattr(err, "ctx", None)
    path = getattr(ctx, "command_path", "") or fallback
    where = path.split(" ", 1)[1] + ": " if " " in path else ""
    return f"{where}{message}; see '{path} --help'"


_NOT_FINITE = ("nan", "inf", "infinity")


def _with_value(err, message: str) -> str:
    """A bad value named in the message: typer checks values with pydantic, whose text says what
    was wanted but not what was given ("Input should be greater than or equal to 0" for ``nan``)."""
    errors = getattr(err.__cause__, "errors", None)
    if not callable(errors) or ": " not in message:
        return message
    try:
        value = errors()[0].get("input")
    except (IndexError, AttributeError, TypeError):
        return message
    what, why = message.split(": ", 1)
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in _NOT_FINITE:
        return f"{what}: must be a finite number, not {value}"
    why = why[0].lower() + why[1:] if why[:1].isupper() else why
    return f"{what}: {why} (got {value!r})" if value is not None else f"{what}: {why}"
