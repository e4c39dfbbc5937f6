"""The byte transport under the protocol core: addresses, sockets, timeouts, TLS and deflate."""
