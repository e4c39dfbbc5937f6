"""Collector addresses: ``host:port`` (IPv6 in brackets), ``thrift://host:port[?protocol=binary]``, and lists of them."""

from __future__ import annotations

from dataclasses import dataclass

from shipper.errors import ConfigError


RPCS = ("avro", "thrift")
THRIFT_PROTOCOLS = ("compact", "binary")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    rpc: str = "avro"  # which of Flume's RPCs the collector speaks: "avro" or "thrift"
    thrift_protocol: str = "compact"  # Thrift's wire protocol: "compact" (Flume's default) or "binary"

    @classmethod
    def parse_collector(cls, text: str) -> "Address":
        """A collector: ``host:port`` or ``avro://host:port`` (Avro), ``thrift://host:port`` (Thrift,
        compact) or ``thrift://host:port?protocol=binary``; ConfigError with the reason otherwise."""
        raw = text.strip()
        scheme, sep, rest = raw.partition("://")
        if not sep:
            return cls.parse(raw).dialable(text)
        scheme = scheme.lower()
        if scheme not in RPCS:
            raise ConfigError(f"bad collector {text!r}: unknown scheme {scheme}://, use avro:// or thrift://")
        rest, _, query = rest.partition("?")
        base = cls.parse(rest)
        protocol = "compact"
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            if scheme != "thrift" or key != "protocol" or value not in THRIFT_PROTOCOLS:
                raise ConfigError(f"bad collector {text!r}: {item!r} is not an option here "
                                  "(thrift:// takes ?protocol=compact or ?protocol=binary)")
            protocol = value
        return cls(base.host, base.port, scheme, protocol).dialable(text)

    def dialable(self, text: str) -> "Address":
        """This address, if a client can connect to it: port 0 only means "any port" to a listener."""
        if self.port == 0:
            raise ConfigError(f"bad collector {text!r}: port 0 cannot be connected to; give the collector's port")
        return self

    @classmethod
    def parse(cls, text: str) -> "Address":
        """``host:port`` or ``[v6addr]:port``; ConfigError with the reason otherwise."""
        raw = text.strip()
        if raw.startswith("["):
            host, sep, rest = raw[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ConfigError(f"bad address {text!r}: write an IPv6 address as [addr]:port")
            port_text = rest[1:]
        else:
            host, sep, port_text = raw.rpartition(":")
            if not sep:
                raise ConfigError(f"bad address {text!r}: expected host:port")
            if ":" in host:
                raise ConfigError(f"bad address {text!r}: write an IPv6 address as [addr]:port")
        if not host:
            raise ConfigError(f"bad address {text!r}: the host is empty")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"bad address {text!r}: the port must be a number from 0 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        hostport = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.rpc == "avro":
            return hostport  # the plain form: what Avro-only configurations and logs always showed
        return f"thrift://{hostport}" + ("?protocol=binary" if self.thrift_protocol == "binary" else "")


def parse_addresses(text: str) -> list[Address]:
    """``h1:p1,thrift://h2:p2`` (spaces allowed around the commas)."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise ConfigError("no collector address given: expected host:port[,host:port...]")
    return [Address.parse_collector(p) for p in parts]
