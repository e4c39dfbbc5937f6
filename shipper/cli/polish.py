"""The command line as a tool's: global options anywhere, metavars that say what to type.

* :func:`hoist_globals`: ``--log-level`` and ``--log-format`` belong to the app, so click accepts
  them only before the sub-command; a user writes them anywhere (``flume-ship tail ... --log-level
  debug``). They are moved in front of the sub-command before click parses. Nothing after ``--``
  is touched.
* :func:`unwrap`: help paragraphs are wrapped by the terminal, not by the source's line breaks.
* :func:`polish`: every option gets a metavar that says what to type (``SECONDS``, ``HOST:PORT``,
  ``SIZE``, ``PATH``, ``N``, the choices) instead of a Python type name; on/off flags get none.
  Names first (the flags whose meaning the type does not say), then the click type.
"""

from __future__ import annotations

GLOBAL_OPTIONS = ("--log-level", "--log-format")

_BY_FLAG = {
    "--to": "HOST:PORT[,...]",
    "--listen": "HOST:PORT",
    "--metrics-listen": "HOST:PORT",
    "--state-dir": "PATH",
    "--config": "PATH",
    "--out": "DIR",
    "--tls-ca": "PATH",
    "--tls-cert": "PATH",
    "--tls-key": "PATH",
    "--tls-server-name": "NAME",
    "--header": "K=V",
    "--include-lines": "REGEX",
    "--exclude-lines": "REGEX",
    "--exclude": "GLOB",
    "--multiline": "java|python|go",
    "--log-level": "debug|info|warning|error",
    "--log-format": "text|json",
    "--compress": "none|deflate",
    "--balance": "failover|round_robin|random",
    "--tls-layering": "zlib-outside|tls-outside",
    "--capacity": "SIZE",
    "--min-free": "SIZE",
    "--batch-bytes": "SIZE",
    "--max-line-bytes": "SIZE",
    "--roll-size": "SIZE",
    "--compression-level": "0-9",
}


def hoist_globals(argv: list[str], commands: set[str]) -> list[str]:
    """``argv`` (without the program name) with the app's own options moved before the sub-command."""
    sub = next((i for i, a in enumerate(argv) if a in commands), None)
    if sub is None:
        return argv
    before, rest = argv[:sub + 1], argv[sub + 1:]
    kept: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            kept += rest[i:]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg or i + 1 >= len(rest):
                moved.append(arg)
                i += 1
            else:
                moved += rest[i:i + 2]
                i += 2
            continue
        kept.append(arg)
        i += 1
    return before[:-1] + moved + before[-1:] + kept


def _metavar(param) -> str | None:
    """Duck-typed: typer carries its own copy of click, and names the annotation in ``bare_type()``."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    for opt in param.opts:
        if opt in _BY_FLAG:
            return _BY_FLAG[opt]
    bare = param.bare_type() if callable(getattr(param, "bare_type", None)) else ""
    if bare in ("bool", "Optional[bool]"):
        return ""
    if "float" in bare:
        return "SECONDS"
    if "int" in bare:
        return "N"
    if param.param_type_name == "argument":
        return (param.name or "ARG").upper()
    return "TEXT"


def unwrap(text: str | None) -> str | None:
    """A help text with the source's line breaks taken out of its paragraphs, so rich wraps them to
    the terminal (typer keeps single line breaks after the first paragraph: on an 80-column terminal
    a docstring wrapped at 100 came out ragged). A line starting ``Example`` stays its own line."""
    if not text:
        return text
    paragraphs = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        out = lines[:1]
        for line in lines[1:]:
            if line.lstrip().startswith(("Example", "\b")) or out[-1].startswith("\b"):
                out.append(line)
            else:
                out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


def polish(command):
    """Give every option of ``command`` and its sub-commands a metavar (see the module docstring)."""
    command.help = unwrap(command.help)
    for param in command.params:
        if param.metavar is None:
            param.metavar = _metavar(param)
        if param.param_type_name == "argument":  # its name column already says what to give
            param.display_type_rich = lambda ctx=None: ""
            if param.required and hasattr(param, "_usage_display_name"):  # FILE, not typer's {FILE}
                param._usage_display_name = lambda p=param: p.display_name_raw + ("..." if p.nargs != 1 else "")
    if not getattr(command, "_polished", False):
        command._polished = True
        made = command.get_help_option

        def help_option(ctx):  # click makes --help anew for each context: no metavar on it either
            option = made(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        polish(sub)
    return command
