"""systemd's notify protocol (``Type=notify``), without libsystemd.

The service manager passes ``$NOTIFY_SOCKET``: a path to an ``AF_UNIX`` datagram socket, or an
abstract socket name when it starts with ``@`` (the ``@`` stands for a leading NUL byte). Each
notification is one datagram of newline-separated ``KEY=VALUE`` assignments:

* ``READY=1`` when the agent ships (the unit counts as started only then),
* ``RELOADING=1`` plus ``MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>`` when a SIGHUP reload begins, and
  ``READY=1`` again when it is done (what ``Type=notify-reload`` expects),
* ``STOPPING=1`` when shutdown begins,
* ``WATCHDOG=1`` at least every half of ``$WATCHDOG_USEC`` when the unit sets ``WatchdogSec=``;
  systemd kills and restarts the service when the pings stop (a hung main loop),
* ``STATUS=<one line>`` for ``systemctl status``.

``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; any other process (a
child, a test runner) ignores the watchdog. With no ``$NOTIFY_SOCKET`` every call is a no-op, so the
agent calls these unconditionally. Send errors are swallowed after one debug line: a notification
is advice to the service manager, never a reason to stop shipping.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("flume-ship.notify")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_interval = watchdog_usec / 1e6 / 2 if watchdog_usec else None
        self._last_ping = 0.0
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ=os.environ) -> "Notifier":
        address = environ.get("NOTIFY_SOCKET") or None
        usec = None
        raw = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(assignments).encode("utf-8"), target)
            return True
        except OSError as exc:
            log.debug("notify %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self, now: float | None = None) -> None:
        """Ping when half the watchdog interval has passed since the last ping."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
