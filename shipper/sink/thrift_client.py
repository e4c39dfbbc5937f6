"""One Thrift collector, one connection: the same client as Avro's, over ``shipper.thriftrpc``.

Theory of operation
-------------------
:class:`ThriftCollectorClient` is :class:`shipper.sink.client.CollectorClient` with another protocol
core under it: the call loop (deadlines, pipelining window, close on any failure, ``.acknowledged``
on errors), the transport (``shipper.transport.stream``: connect timeout, TLS with the same verification) and
the error policy are shared, so a Thrift collector behaves in a failover or balanced group exactly
like an Avro one. Only :meth:`connect` differs: it puts ``shipper.transport.thrift.ClientCore`` over the stream,
which drives ``thriftrpc.ClientConnection`` and hands the loop the Avro core's answer events.

Answers: ``OK`` acknowledges; ``FAILED``, ``ERROR`` and ``UNKNOWN`` become
:class:`~shipper.errors.CollectorRejected` naming the status (retriable, like Avro's FAILED: the
batch stays in the channel and goes to the next collector); a ``TApplicationException`` is
reported with its message and type. Bytes that are no Thrift answer (the other wire protocol, an
Avro server, garbage) become :class:`~shipper.errors.PeerProtocolError`.

The channel's events are Avro-encoded; the core re-encodes a batch for Thrift at send time
(``thriftrpc.transcode_payload``), so one lease can go to either kind of collector. Flume's
ThriftSource has no compression, so ``--compress`` applies to Avro collectors only.

:func:`probe_thrift` is ``ping thrift://...``: resolve, TCP, TLS, an empty appendBatch; on a
failure after connecting it tries the other Thrift protocol and Avro to name a mismatch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from shipper.errors import CollectorRejected, PeerClosed, RequestTimeout, ShipperError, TransportError
from shipper.sink.client import CollectorClient
from shipper.sink.probe import ProbeReport, Step, _probe_into, connect_steps
from shipper.transport import Address, ClientOptions, open_stream
from shipper.transport.thrift import ClientCore

log = logging.getLogger("flume-ship.sink")

# Alternatives tried by ping to name a mismatch get this long at most to answer.
MISMATCH_TIMEOUT = 3.0


class ThriftCollectorClient(CollectorClient):
    """A connection to one Flume ThriftSource (or ``collect --protocol thrift``)."""

    def __init__(self, address: Address, options: ClientOptions = ClientOptions()) -> None:
        if options.compress:
            log.info("%s: --compress %s applies to Avro collectors only (Flume's Thrift RPC has no compression)",
                     address, options.compress)
        super().__init__(address, replace(options, compress=None))

    def connect(self) -> None:
        if self._stream is None:
            self._stream = open_stream(self.address, self.options, self._tls_ctx)
            self._conn = ClientCore(self.address.thrift_protocol)


# --------------------------------------------------------------------------- ping


def probe_thrift(address: Address, options: ClientOptions) -> ProbeReport:
    report = ProbeReport(address)
    if _probe_thrift_into(report, address, options):
        _name_mismatch(report, address, options)
    return report


def _probe_thrift_into(report: ProbeReport, address: Address, options: ClientOptions) -> bool:
    """Fills ``report``; True when the call failed in a way another protocol could explain (no
    answer, a hang-up, bytes that are no Thrift answer), False otherwise."""
    client = ThriftCollectorClient(address, options)
    connected = connect_steps(report, address, client.options, client._tls_ctx)
    if connected is None:
        return False
    sock, stream = connected
    steps = report.steps
    started = time.monotonic()
    try:
        client._stream, client._conn = stream, ClientCore(address.thrift_protocol)
        client.append_batch([])
    except CollectorRejected as err:
        steps.append(Step("appendBatch", False, str(err)))
        report.verdict = "the collector refuses even an empty batch: its channel or storage is failing"
        return False
    except RequestTimeout:
        steps.append(Step("appendBatch", False, f"no reply within {options.request_timeout:g} s"))
        report.verdict = ("connected, but an empty appendBatch got no reply: the collector may speak another "
                          "protocol or expect TLS, or it is stuck or overloaded")
        return True
    except TransportError as err:
        hung_up = isinstance(err, PeerClosed) or isinstance(err.__cause__, ConnectionResetError)
        steps.append(Step("appendBatch", False, str(err), closed=hung_up))
        report.verdict = ("the collector closed the connection without answering: it may speak the other "
                          "Thrift protocol, Avro, or expect TLS" if hung_up else f"the empty appendBatch failed: {err}")
        return hung_up
    except ShipperError as err:
        steps.append(Step("appendBatch", False, str(err)))
        report.verdict = f"the collector does not answer as Flume's ThriftSource does: {err}"
        return True
    finally:
        client.close()
        sock.close()
    steps.append(Step("appendBatch", True, f"empty batch answered OK ({address.thrift_protocol} protocol)",
                      time.monotonic() - started))
    report.verdict = "healthy"
    return False


def _answers(candidate: Address, options: ClientOptions) -> bool:
    """Whether the collector answers healthily when spoken to as ``candidate`` says (quickly)."""
    report = ProbeReport(candidate)
    probe_into = _probe_thrift_into if candidate.rpc == "thrift" else _probe_into
    probe_into(report, candidate, replace(options, request_timeout=min(options.request_timeout, MISMATCH_TIMEOUT)))
    return report.healthy


def _name_mismatch(report: ProbeReport, address: Address, options: ClientOptions) -> None:
    """A Thrift call failed after connecting: does the collector answer another protocol?"""
    other = "binary" if address.thrift_protocol == "compact" else "compact"
    candidate = replace(address, thrift_protocol=other)
    if _answers(candidate, options):
        report.verdict = (f"protocol mismatch: the collector speaks Thrift's {other} protocol, not "
                          f"{address.thrift_protocol}; write the collector as {candidate}")
        return
    avro = replace(address, rpc="avro", thrift_protocol="compact")
    if _answers(avro, options):
        report.verdict = (f"protocol mismatch: the collector speaks Avro RPC (an AvroSource), not Thrift; "
                          f"write the collector as {avro} (or avro://{avro})")


def name_other_rpc(report: ProbeReport, address: Address, options: ClientOptions) -> None:
    """An Avro handshake failed after connecting: does the collector answer Thrift?"""
    for proto in ("compact", "binary"):
        candidate = replace(address, rpc="thrift", thrift_protocol=proto)
        if _answers(candidate, options):
            report.verdict = (f"protocol mismatch: the collector speaks Thrift ({proto} protocol), not Avro; "
                              f"write the collector as {candidate}")
            return
