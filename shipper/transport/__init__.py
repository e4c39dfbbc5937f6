"""The byte transport under the protocol core: addresses, TLS, the layer stack, client streams.

- :mod:`shipper.transport.address`: ``host:port`` parsing.
- :mod:`shipper.transport.tls`: ``TLSOptions`` and each role's ``SSLContext``.
- :mod:`shipper.transport.layers`: the TLS and deflate layers and their stacking (both roles).
- :mod:`shipper.transport.stream`: blocking client streams with deadlines; the client side's
  boundary where ``OSError``/``ssl.SSLError`` become :class:`~shipper.errors.TransportError`.

The collector's server loop (:mod:`shipper.collector.server`) drives the same layer stack.
"""

from shipper.transport.address import RPCS, THRIFT_PROTOCOLS, Address, parse_addresses
from shipper.transport.layers import COMPRESSIONS, LAYERINGS, RECV_SIZE, LayerStack, build_layer_stack, check_layering
from shipper.transport.stream import (
    ClientOptions, Stream, client_layer_stack, connect_tcp, local_address, open_stream, resolve,
)
from shipper.transport.tls import TLSOptions, client_tls_context, server_tls_context

__all__ = [
    "COMPRESSIONS", "LAYERINGS", "RECV_SIZE", "RPCS", "THRIFT_PROTOCOLS", "Address", "ClientOptions", "LayerStack", "Stream", "TLSOptions",
    "build_layer_stack", "check_layering", "client_layer_stack", "client_tls_context", "connect_tcp", "local_address", "open_stream",
    "parse_addresses", "resolve", "server_tls_context",
]
