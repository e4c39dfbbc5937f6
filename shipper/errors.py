"""The project's error tree: errors carry their own policy.

Every error flume-ship raises on purpose derives from :class:`ShipperError`. Two class attributes
say what to do with it, so callers never match on message text:

* ``retriable``: the sink may try the same batch again (on this or another collector). A
  retriable error always means the connection it came from is closed and must not be reused.
* ``exit_code``: the process exit status when the error ends a command. The codes are part of
  the command-line contract and are documented in the README (section "Exit codes").

Lower-layer exceptions (``OSError``, ``ssl.SSLError``, ``sqlite3.Error``) are translated into
these once, at the layer boundary that sees them, with the original kept as ``__cause__``.
"""

from __future__ import annotations

import re

# Exit codes, documented in README.md. Keep the two in step.
EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected internal error (a bug: please report it)
EXIT_USAGE = 2  # a bad flag, argument or configuration value
EXIT_UNAVAILABLE = 3  # a collector could not be reached or did not accept the events
EXIT_LOCKED = 4  # another flume-ship holds the state directory
EXIT_STATE = 5  # the state directory is unusable (newer format, unreadable, not writable)
EXIT_DEADLINE = 6  # --once: delivery did not finish before --deadline
EXIT_INPUT = 7  # an input file could not be read
EXIT_INTERRUPTED = 130  # stopped by a second SIGINT/SIGTERM before draining finished


class ShipperError(Exception):
    """Root of every error flume-ship raises on purpose."""

    retriable: bool = False
    exit_code: int = EXIT_FAILURE


class ConfigError(ShipperError):
    """A flag, argument or configuration value is wrong; the message says which and why."""

    exit_code = EXIT_USAGE


class InputError(ShipperError):
    """An input file cannot be read."""

    exit_code = EXIT_INPUT


# --- the protocol core (raised by shipper.avroipc, which defines its own copies; see below) ---


class DeliveryError(ShipperError):
    """A batch did not reach a collector; the sink decides whether and when to retry."""

    retriable = True
    exit_code = EXIT_UNAVAILABLE


class TransportError(DeliveryError):
    """The connection failed: refused, reset, closed, unreachable, TLS failure."""


class ConnectTimeout(TransportError):
    """TCP or TLS connect did not finish within --connect-timeout."""


class RequestTimeout(TransportError):
    """A call (with its handshake, on a fresh connection) got no reply within --request-timeout."""


class CollectorRejected(DeliveryError):
    """The collector answered, but not OK: Status FAILED or UNKNOWN, or an Avro system error."""


class PeerProtocolError(DeliveryError):
    """The collector sent bytes that break the protocol (garbage frame, wrong serial, bad handshake)."""


# --- state directory and channel ---


class StateError(ShipperError):
    """The state directory cannot be used as it is."""

    exit_code = EXIT_STATE


class StateLocked(StateError):
    """Another flume-ship process holds the state directory's lock."""

    exit_code = EXIT_LOCKED


class ChannelIOError(ShipperError):
    """A channel write failed (disk full, I/O error); nothing committed was lost, retry later."""

    retriable = True
    exit_code = EXIT_STATE


class DeadlineExceeded(ShipperError):
    """--once: the channel was not empty when --deadline passed."""

    exit_code = EXIT_DEADLINE


# --- text from peers, on its way into a log line ---

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str | bytes, limit: int = 512) -> str:
    """Peer-provided text made safe for one log line: control characters (newlines included)
    escaped as ``\\n``, ``\\x1b``..., so a peer cannot forge log lines or drive a terminal, and
    cut to ``limit`` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text) > limit:
        text = text[:limit] + f"...[{len(text) - limit} more characters]"
    return _CONTROL.sub(_escape, text)


def _escape(m) -> str:
    c = m.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
