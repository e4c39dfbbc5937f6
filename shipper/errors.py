"""The project's error tree: errors carry their own policy.

Every error flume-ship raises on purpose is defined here and derives from :class:`ShipperError`.
Attributes declared on the classes say what to do with one, so callers never match on message
text:

* ``retriable``: the sink may try the same batch again (on this or another collector). A
  retriable error always means the connection it came from is closed and must not be reused.
* ``exit_code``: the process exit status when the error ends a command, one of the ``EXIT_*``
  constants below. The codes are part of the command-line contract and are documented in the
  README (section "Exit codes").
* ``acknowledged`` (delivery errors): events the collector acknowledged OK before the failure,
  when several calls were in flight; the client that raises the error fills it in.
* :meth:`ShipperError.lines`: what the user is told, one line per problem (``flume-ship: error:``
  is prefixed by ``shipper.cli.app.report``, the one function that reports an error).

Lower-layer exceptions are translated into these once, at the boundary that sees them, with the
original kept as ``__cause__``: ``OSError``/``ssl.SSLError`` on the client side in
``shipper.transport.stream`` (its texts from ``shipper.transport.tls.reason``), the protocol
core's ``RemoteProtocolError`` in ``shipper.sink.client`` (client role) and
``shipper.collector.server`` (server role, where the connection is closed and logged instead),
``sqlite3.Error``/``OSError`` of the state directory in ``shipper.channel``, and ``OSError`` on
tailed files in ``shipper.tail``. The protocol core keeps its own small tree
(``shipper.avroipc.errors``), since it imports nothing from the rest of ``shipper``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Exit codes, documented in README.md. Keep the two in step.
EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected internal error (a bug: please report it)
EXIT_USAGE = 2  # a bad flag, argument or configuration value
EXIT_UNAVAILABLE = 3  # a collector could not be reached or did not accept the events
EXIT_LOCKED = 4  # another flume-ship holds the state directory
EXIT_STATE = 5  # the state directory is unusable (newer format, unreadable, not writable)
EXIT_DEADLINE = 6  # --once: delivery did not finish before --deadline
EXIT_INPUT = 7  # an input is missing or unreadable (--once: a path that matches nothing, a file it cannot read)
EXIT_QUEUED = 8  # --once: stopped by SIGINT/SIGTERM with events still queued (they wait for the next run)
EXIT_WORKER = 9  # collect --workers: a worker process died (the others were stopped cleanly)
EXIT_GAVE_UP = 10  # --give-up-after: no collector accepted anything for that long (events stay queued)
EXIT_INTERRUPTED = 130  # stopped by a second SIGINT/SIGTERM before draining finished


class ShipperError(Exception):
    """Root of every error flume-ship raises on purpose."""

    retriable: bool = False
    exit_code: int = EXIT_FAILURE

    def lines(self) -> list[str]:
        """What the user is told: one line per problem."""
        return [str(self)]


class ConfigError(ShipperError):
    """A flag, argument or configuration value is wrong; the message says which and why."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where (a file, or "command line"), which key or flag, and why."""

    where: str
    key: str  # dotted TOML key, or the flag; "-" for the file as a whole
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}" if self.key == "-" else f"{self.where}: {self.key}: {self.why}"


class ConfigFileError(ConfigError):
    """One or more configuration problems; ``problems`` lists each with its file or flag and key."""

    problems: list[Problem]

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid configuration"
        more = f" (and {len(self.problems) - 1} more problems; run flume-ship validate)" if len(self.problems) > 1 else ""
        super().__init__(first + more)

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems] or [str(self)]


class InputError(ShipperError):
    """An input file cannot be read."""

    exit_code = EXIT_INPUT


# --- delivery (raised by the transport and the sink's client; the sink reads ``retriable``) ---


class DeliveryError(ShipperError):
    """A batch did not reach a collector; the sink decides whether and when to retry."""

    retriable = True
    exit_code = EXIT_UNAVAILABLE
    acknowledged: int = 0  # events acknowledged OK before this failure (pipelined calls)
    busy = False  # the collector is alive and answering, only not accepting now: retry it soon


class TransportError(DeliveryError):
    """The connection failed: refused, reset, closed, unreachable, TLS failure."""


class ConnectTimeout(TransportError):
    """TCP or TLS connect did not finish within --connect-timeout."""


class RequestTimeout(TransportError):
    """A call (with its handshake, on a fresh connection) got no reply within --request-timeout."""


class PeerClosed(TransportError):
    """The peer ended the connection (EOF or TLS close) before it answered."""


class CertificateError(TransportError):
    """TLS: the server's certificate did not verify."""


class ClientCertificateRefused(TransportError):
    """TLS: the collector requires a client certificate (mutual TLS) and we sent none, or one it
    does not accept."""


class CollectorRejected(DeliveryError):
    """The collector answered, but not OK: Status FAILED or UNKNOWN, or an Avro system error."""

    busy = True

    status: object = None  # the Status it answered (FAILED, UNKNOWN), or None for an error message
    message: str | None = None  # the collector's error text, when it answered with one
    about_batch: bool = True  # an answer to the batch (False: to the handshake); counts toward max_rejects

    def __init__(self, text: str, *, status: object = None, message: str | None = None,
                 about_batch: bool = True) -> None:
        super().__init__(text)
        self.status, self.message, self.about_batch = status, message, about_batch


class PeerProtocolError(DeliveryError):
    """The collector sent bytes that break the protocol (garbage frame, wrong serial, bad handshake)."""


class GaveUp(ShipperError):
    """--max-attempts was set and used up; the batch stays in the channel."""

    exit_code = EXIT_UNAVAILABLE


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


class PutRevoked(ShipperError):
    """A put refused because its writer's right to commit was revoked (a source replaced by a reload
    while it was still reading or committing: ``shipper.channel.core.Fence``); nothing of it was
    committed, and its successor reads those lines again from the committed offsets."""


class DeadlineExceeded(ShipperError):
    """--once: the channel was not empty when --deadline passed."""

    exit_code = EXIT_DEADLINE


# --- the collector (flume-ship collect) ---


class LimitRefused(ShipperError):
    """collect refuses or drops one client connection by a limit (shipper.collector.limits); the
    collector counts it under ``reason`` and logs it, and serves on: it never ends the command."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WorkerDied(ShipperError):
    """``collect --workers``: a worker process died; the parent stopped the others and ends."""

    exit_code = EXIT_WORKER

    def __init__(self, which: list[str]) -> None:
        super().__init__("; ".join(which) + "; the other workers were stopped (see the log above)")


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
