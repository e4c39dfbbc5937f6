"""The ``flume-ship`` command line: one module per command group, registered on one typer app.

- :mod:`shipper.cli.app`: the app, global options (``--log-level``, ``--version``) and
  :func:`~shipper.cli.app.report`, the one function that tells the user about an error.
- :mod:`shipper.cli.options`: flags and parsers shared by commands (transport, headers, state dir).
- :mod:`shipper.cli.tail`: ``tail`` and ``validate``; :mod:`shipper.cli.collect`: ``collect``;
  :mod:`shipper.cli.send_ping`: ``send`` and ``ping``; :mod:`shipper.cli.status`: ``status``;
  :mod:`shipper.cli.channel`: ``channel verify`` and ``channel dead-letters``; :mod:`shipper.cli.top`:
  ``top``; :mod:`shipper.cli.import_flume`: ``import-flume``.
- :mod:`shipper.cli.polish`: global options after the sub-command, metavars; :mod:`shipper.cli.usage`:
  click's usage errors (bad flag, missing argument, bad value) as the same one line as ours.

``main`` runs the command line; the console script and ``python -m shipper`` reach it through
:mod:`shipper.__main__`, which turns the garbage collector off while the package is imported.
"""

import gc
import sys

import typer

from shipper.cli import channel, collect, send_ping, tail, status, top, import_flume  # noqa: F401  (registers the commands, in help order)
from shipper.cli.app import app, report
from shipper.errors import EXIT_INTERRUPTED, EXIT_OK, ShipperError

__all__ = ["app", "build", "command_names", "main"]


def command_names() -> set[str]:
    """The sub-commands' names, from their registrations (without building any)."""
    import typer.main

    return ({info.name or typer.main.get_command_name(info.callback.__name__) for info in app.registered_commands}
            | {info.name for info in app.registered_groups})


def build(only: str | None = None):
    """The app's click command; with ``only``, holding that sub-command alone. typer builds each
    command's parameters from its signature (its annotations evaluated, its options made): a run
    needs one command, and building the other nine cost ~10 ms of every start. The app's list of
    commands (``--help`` before a sub-command, an unknown name) is built whole."""
    import typer.main

    if only is None:
        return typer.main.get_command(app)
    saved = app.registered_commands, app.registered_groups
    app.registered_commands = [info for info in saved[0]
                               if (info.name or typer.main.get_command_name(info.callback.__name__)) == only]
    app.registered_groups = [info for info in saved[1] if info.name == only]
    try:
        return typer.main.get_command(app)
    finally:
        app.registered_commands, app.registered_groups = saved


def main() -> None:
    """Run the app; a ShipperError or a usage error becomes one line on stderr and its exit code."""
    from typer import _click as click  # the click typer carries (typer.Exit/Abort are its own)
    from typer.exceptions import Abort, Exit

    from shipper.cli.coerce import fast_coercion
    from shipper.cli.polish import hoist_globals, polish
    from shipper.cli.usage import usage_line

    commands = command_names()
    args = hoist_globals(sys.argv[1:], commands)
    sub = next((a for a in args if a in commands), None)
    wants_list = sub is None or any(a in ("--help", "-h") for a in args[:args.index(sub)])
    command = fast_coercion(polish(build(None if wants_list else sub)))
    gc.freeze()  # what start-up made stays: later collections need not walk it (see shipper.__main__)
    gc.enable()
    try:
        code = command.main(args=args, prog_name="flume-ship", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:
        code = EXIT_OK  # the help was printed already
    except click.exceptions.ClickException as err:  # bad flag, missing argument, bad value: one line
        line = usage_line(err, f"flume-ship {sub}" if sub else "flume-ship")
        typer.echo(f"flume-ship: error: {line}", err=True)
        code = err.exit_code
    except ShipperError as err:
        code = report(err).exit_code
    except Exit as err:
        code = err.exit_code
    except (Abort, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)

