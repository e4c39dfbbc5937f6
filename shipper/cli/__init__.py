"""The ``flume-ship`` command line: ``main`` is the console script's entry point."""

from shipper.cli.app import main

__all__ = ["main"]
