"""Collector addresses: ``host:port`` parsing (IPv6 in brackets) and lists of them."""

from __future__ import annotations

from dataclasses import dataclass

from shipper.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

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
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_addresses(text: str) -> list[Address]:
    """``h1:p1,h2:p2`` (spaces allowed around the commas)."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise ConfigError("no collector address given: expected host:port[,host:port...]")
    return [Address.parse(p) for p in parts]
