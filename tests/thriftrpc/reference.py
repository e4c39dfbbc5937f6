"""Apache Thrift's own Python protocols (the ``thrift`` package) as an independent reference.

Our codec is hand-written; these helpers encode and decode Flume's messages with Thrift's
TCompactProtocol and TBinaryProtocol over a memory buffer, so the tests can check every byte we
write against what Thrift writes, and that Thrift reads what we write.
"""

from __future__ import annotations

from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport.TTransport import TMemoryBuffer


def protocol(proto: str, data: bytes | None = None):
    buf = TMemoryBuffer(data) if data is not None else TMemoryBuffer()
    return buf, (TCompactProtocol(buf) if proto == "compact" else TBinaryProtocol(buf))


def write_event(p, headers, body):
    p.writeStructBegin("ThriftFlumeEvent")
    p.writeFieldBegin("headers", TType.MAP, 1)
    p.writeMapBegin(TType.STRING, TType.STRING, len(headers))
    for k, v in headers.items():
        p.writeString(k)
        p.writeString(v)
    p.writeMapEnd()
    p.writeFieldEnd()
    p.writeFieldBegin("body", TType.STRING, 2)
    p.writeBinary(body)
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()


def append_batch_call(proto: str, seqid: int, events) -> bytes:
    buf, p = protocol(proto)
    p.writeMessageBegin("appendBatch", TMessageType.CALL, seqid)
    p.writeStructBegin("appendBatch_args")
    p.writeFieldBegin("events", TType.LIST, 1)
    p.writeListBegin(TType.STRUCT, len(events))
    for headers, body in events:
        write_event(p, headers, body)
    p.writeListEnd()
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    return buf.getvalue()


def status_reply(proto: str, seqid: int, status: int) -> bytes:
    buf, p = protocol(proto)
    p.writeMessageBegin("appendBatch", TMessageType.REPLY, seqid)
    p.writeStructBegin("appendBatch_result")
    p.writeFieldBegin("success", TType.I32, 0)
    p.writeI32(status)
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    return buf.getvalue()


def read_call(proto: str, data: bytes):
    """(name, type, seqid, [(headers, body)]) as Thrift's protocol reads them."""
    _, p = protocol(proto, data)
    name, mtype, seqid = p.readMessageBegin()
    p.readStructBegin()
    events = []
    while True:
        _, ftype, fid = p.readFieldBegin()
        if ftype == TType.STOP:
            break
        assert (fid, ftype) == (1, TType.LIST)
        _, size = p.readListBegin()
        for _ in range(size):
            p.readStructBegin()
            headers, body = None, None
            while True:
                _, t, i = p.readFieldBegin()
                if t == TType.STOP:
                    break
                if i == 1:
                    _, _, n = p.readMapBegin()
                    headers = {p.readString(): p.readString() for _ in range(n)}
                    p.readMapEnd()
                else:
                    body = p.readBinary()
                p.readFieldEnd()
            p.readStructEnd()
            events.append((headers, body))
        p.readListEnd()
        p.readFieldEnd()
    p.readStructEnd()
    return name, mtype, seqid, events


def read_reply(proto: str, data: bytes):
    """(name, type, seqid, status) as Thrift reads a REPLY."""
    _, p = protocol(proto, data)
    name, mtype, seqid = p.readMessageBegin()
    p.readStructBegin()
    status = None
    while True:
        _, ftype, fid = p.readFieldBegin()
        if ftype == TType.STOP:
            break
        status = p.readI32()
        p.readFieldEnd()
    return name, mtype, seqid, status
