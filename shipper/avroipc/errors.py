"""Errors of the protocol core, split the way h11 and wsproto split them.

* :class:`LocalProtocolError`: our own code misused the API (a second call before the handshake
  finished, a response for a call that was never received). A bug on our side; the connection
  state is unchanged.
* :class:`RemoteProtocolError`: the peer sent bytes that break the protocol (bad framing, a frame
  over the caps, an answer to a call never made, a handshake that makes no sense). The connection
  cannot be trusted any more and the transport must close it.

The core imports nothing from ``shipper``; the transport layers translate these into the policy
carrying errors of ``shipper.errors`` (``PeerProtocolError`` and friends) at their boundary.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of the protocol core's errors."""


class LocalProtocolError(ProtocolError):
    """We used the API wrongly; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; close the connection."""
