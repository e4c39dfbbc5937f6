"""TLS settings and the ``ssl.SSLContext`` of each role.

The client verifies the collector's certificate against ``ca_file`` or the system store, unless
``insecure`` was asked for explicitly; the collector presents ``cert_file``/``key_file`` and asks
no client certificate (as Flume's AvroSource). A file that cannot be loaded is a ConfigError
naming the file; :func:`reason` gives the short text of an ``OSError``/``ssl.SSLError``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from shipper.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TLSOptions:
    ca_file: str | None = None  # verify the server against this CA bundle (default: system store)
    insecure: bool = False  # skip verification: only by an explicit flag
    server_name: str | None = None  # name to verify / SNI (default: the host of the address)
    cert_file: str | None = None  # server role (collector): certificate chain
    key_file: str | None = None  # server role: private key


def client_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    """Verify the server (CA file or the system store) unless ``insecure`` says otherwise."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the TLS CA file {tls.ca_file}: {reason(err)}") from err
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    """The collector's context: its certificate and key; clients are not asked for one (like Flume)."""
    if not tls.cert_file or not tls.key_file:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the TLS certificate {tls.cert_file} / key {tls.key_file}: {reason(err)}") from err
    return ctx


def reason(err: BaseException) -> str:
    """The short text of an OSError or SSLError, for one line to the user."""
    if isinstance(err, ssl.SSLError):
        return err.reason or err.strerror or str(err)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
