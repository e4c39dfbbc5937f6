"""The Thrift core's own errors (it imports nothing from the rest of shipper)."""


class ProtocolError(Exception):
    """Base of the core's errors."""


class LocalProtocolError(ProtocolError):
    """We misused the API, or handed the core bytes that are not what they claim to be."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break Flume's Thrift protocol (or our limits)."""
