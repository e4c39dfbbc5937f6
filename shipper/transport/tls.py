"""TLS settings and the ``ssl.SSLContext`` of each role.

The client verifies the collector's certificate against ``ca_file`` or the system store, unless
``insecure`` was asked for explicitly (and logs a warning then), and presents ``cert_file``/``key_file``
to a collector that asks for a client certificate. The collector presents its ``cert_file``/``key_file``;
with ``client_ca_file`` it requires every client to present a certificate that CA signed (mutual
TLS), without it asks for none (as Flume's AvroSource). A file that cannot be loaded is a
ConfigError naming the file; :func:`reason` gives the short text of an ``OSError``/``ssl.SSLError``,
with a hint for the failures a user can fix; :data:`CLIENT_CERT_REFUSED` names OpenSSL's reasons
for a collector refusing our client certificate (or its absence).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

from shipper.errors import ConfigError

log = logging.getLogger("flume-ship.tls")

# ``ssl`` (and OpenSSL with it, ~6 ms a start) is imported only by what builds a TLS context: a
# plain connection never loads it. Until it is loaded, no ssl.SSLError can exist (``ssl_errors``).

# OpenSSL reasons for a collector refusing our client certificate (or its absence).
CLIENT_CERT_REFUSED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA",
                       "SSLV3_ALERT_CERTIFICATE_UNKNOWN"}


@dataclass(frozen=True, slots=True)
class TLSOptions:
    ca_file: str | None = None  # verify the server against this CA bundle (default: system store)
    insecure: bool = False  # skip verification: only by an explicit flag
    server_name: str | None = None  # name to verify / SNI (default: the host of the address)
    cert_file: str | None = None  # our certificate chain (the collector's; a client's for mutual TLS)
    key_file: str | None = None  # its private key
    client_ca_file: str | None = None  # server role: require client certificates signed by this CA


def ssl_errors(name: str = "SSLError") -> type[BaseException] | tuple[()]:
    """``ssl.<name>`` (an SSLError class) for an ``except`` clause, or ``()`` (catches nothing)
    while ``ssl`` is not imported: then nothing can have raised it."""
    mod = sys.modules.get("ssl")
    return getattr(mod, name) if mod is not None else ()


def client_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    """Verify the server (CA file or the system store) unless ``insecure`` says otherwise;
    present ``cert_file``/``key_file`` to a collector that asks for a client certificate."""
    import ssl

    if tls.insecure and tls.ca_file:
        raise ConfigError("--tls-insecure and --tls-ca contradict each other: give one of them")
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("a client certificate needs both --tls-cert and --tls-key")
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the TLS CA file {tls.ca_file}: {reason(err)}") from err
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("TLS certificate verification is OFF (--tls-insecure): anyone on the path can read and "
                    "change the events; give the collector's CA with --tls-ca instead")
    if tls.cert_file:
        _load_cert(ctx, tls)
    return ctx


def server_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    """The collector's context: its certificate and key. With ``client_ca_file``, every client
    must present a certificate that CA signed (mutual TLS); without it none is asked for (like
    Flume's AvroSource)."""
    import ssl

    if not tls.cert_file or not tls.key_file:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_cert(ctx, tls)
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"cannot load the client CA file {tls.client_ca_file}: {reason(err)}") from err
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _load_cert(ctx: ssl.SSLContext, tls: TLSOptions) -> None:
    import ssl

    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the TLS certificate {tls.cert_file} / key {tls.key_file}: {reason(err)}") from err


# OpenSSL's reasons for the TLS failures a user can fix, in words that say how.
_TLS_HINTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the collector requires a client certificate: give --tls-cert and --tls-key",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate, and --tls-client-ca requires one",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer did not accept our certificate (not signed by the CA it trusts?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "CERTIFICATE_VERIFY_FAILED": "certificate verify failed",
}


def reason(err: BaseException) -> str:
    """The short text of an OSError or SSLError, for one line to the user (with how to fix it,
    where OpenSSL's reason is one a user can act on)."""
    if isinstance(err, ssl_errors()):
        text = err.reason or err.strerror or str(err)
        hint = _TLS_HINTS.get(err.reason or "")
        return f"{hint} ({text})" if hint else text
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
