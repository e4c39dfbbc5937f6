"""The ``flume-ship`` command line: one module per command group, registered on one typer app.

- :mod:`shipper.cli.app`: the app, global options (``--log-level``, ``--version``) and
  :func:`~shipper.cli.app.report`, the one function that tells the user about an error.
- :mod:`shipper.cli.options`: flags and parsers shared by commands (transport, headers, state dir).
- :mod:`shipper.cli.tail`: ``tail`` and ``validate``; :mod:`shipper.cli.collect`: ``collect``;
  :mod:`shipper.cli.send_ping`: ``send`` and ``ping``; :mod:`shipper.cli.status`: ``status``;
  :mod:`shipper.cli.channel`: ``channel verify`` and ``channel dead-letters``;
  :mod:`shipper.cli.import_flume`: ``import-flume``.

``main`` is the console script's entry point.
"""

import sys

from shipper.cli import channel, collect, send_ping, tail, status, import_flume  # noqa: F401  (registers the commands, in help order)
from shipper.cli.app import app, report
from shipper.errors import EXIT_INTERRUPTED, ShipperError

__all__ = ["app", "main"]


def main() -> None:
    """Run the app; a ShipperError becomes one line on stderr and its exit code."""
    try:
        app()
    except ShipperError as err:
        sys.exit(report(err).exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)

