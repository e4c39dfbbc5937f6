"""Flume's ``AvroSourceProtocol``: its texts and hashes, ``Status``, and the handshake records.

What gets hashed (avro-rpc-wire.md §1.1, §3) is the exact compact JSON that Java's
``Protocol.toString()`` produces, MD5 over its UTF-8 bytes. Released Flume 1.2 … 1.11.0 was
built with an Avro IDL compiler that keeps the license comment's `` * `` prefixes in ``doc``
(MD5 ``86aa…0a65``, 1334 bytes); Flume master, built with Avro ≥ 1.11.1, strips them
(``8076…e7b1fe``, 1289 bytes). Both texts are kept here; the second is derived from the first by
the documented doc-string rewrite.

Handshake records (Avro's ``HandshakeRequest`` / ``HandshakeResponse``), field order matters::

    HandshakeRequest  = clientHash:fixed16  clientProtocol:[null,string]
                        serverHash:fixed16  meta:[null,map<bytes>]
    HandshakeResponse = match:enum{BOTH,CLIENT,NONE}  serverProtocol:[null,string]
                        serverHash:[null,fixed16]     meta:[null,map<bytes>]

A union is its zigzag branch index (``00`` null, ``02`` the value) then the value. Java clients
always send ``meta`` as an empty map (``02 00``); Java servers always answer ``meta`` null.

``flume-ship collect`` answers ``meta`` = {:data:`ORDERED_PIPELINE`: :data:`ORDERED_PIPELINE_VERSION`}:
it applies one connection's calls strictly in order and, once it refused one, refuses every later
call of that connection without running it, so a client may keep several calls in flight without
a refused call being overtaken (docs/protocol.md, "Ordered pipelining"). Java's Requestor hands
``meta`` to RPC plugins only, so Flume's AvroSink ignores it; a reader must accept both null and
a map, and a server that does not name the key makes no such promise.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

from shipper.avroipc.avro import (
    AvroDecodeError,
    Reader,
    encode_bytes_map,
    encode_string,
)
from shipper.avroipc.limits import LimitExceeded

ORDERED_PIPELINE = "flume-ship.ordered-pipeline"
ORDERED_PIPELINE_VERSION = b"1"


def promises_ordered_pipeline(meta: dict[str, bytes] | None) -> bool:
    """The handshake response's ``meta`` advertises ordered pipelining (a version we know)."""
    return bool(meta) and meta.get(ORDERED_PIPELINE) == ORDERED_PIPELINE_VERSION


PROTOCOL_TEXT = (
    '{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro","doc":"* Licensed'
    " to the Apache Software Foundation (ASF) under one\\n * or more contributor license agreements."
    "  See the NOTICE file\\n * distributed with this work for additional information\\n * regarding"
    " copyright ownership.  The ASF licenses this file\\n * to you under the Apache License, Version"
    ' 2.0 (the\\n * \\"License\\"); you may not use this file except in compliance\\n * with the'
    " License.  You may obtain a copy of the License at\\n *\\n * http://www.apache.org/licenses/"
    "LICENSE-2.0\\n *\\n * Unless required by applicable law or agreed to in writing,\\n * software"
    ' distributed under the License is distributed on an\\n * \\"AS IS\\" BASIS, WITHOUT WARRANTIES'
    " OR CONDITIONS OF ANY\\n * KIND, either express or implied.  See the License for the\\n *"
    ' specific language governing permissions and limitations\\n * under the License.","types":'
    '[{"type":"enum","name":"Status","symbols":["OK","FAILED","UNKNOWN"]},{"type":"record","name":'
    '"AvroFlumeEvent","fields":[{"name":"headers","type":{"type":"map","values":"string"}},'
    '{"name":"body","type":"bytes"}]}],"messages":{"append":{"request":[{"name":"event","type":'
    '"AvroFlumeEvent"}],"response":"Status"},"appendBatch":{"request":[{"name":"events","type":'
    '{"type":"array","items":"AvroFlumeEvent"}}],"response":"Status"}}}'
)


def protocol_hash(text: str) -> bytes:
    """The 16-byte MD5 Avro uses to name a protocol text."""
    known = _KNOWN_HASHES.get(text)
    if known is not None:
        return known
    import hashlib  # only for texts other than Flume's: importing it loads OpenSSL (~3 ms a start)

    return hashlib.md5(text.encode("utf-8")).digest()


def compact_json(text: str) -> str:
    """Re-serialise protocol JSON the way Java's Protocol.toString() writes it (§1.1)."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def _strip_doc_prefixes(text: str) -> str:
    # Avro IDL >= 1.11.1 (AVRO-3294) drops the leading "*" and each line's " *" prefix.
    obj = json.loads(text)
    doc = re.sub(r"^\* ?", "", obj["doc"])
    obj["doc"] = re.sub(r"\n \* ?", "\n", doc)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# The MD5s of the two texts, written out (a test checks them against hashlib): every agent start
# needs them, and hashing here would load OpenSSL for nothing else.
PROTOCOL_HASH = bytes.fromhex("86aadae2c45474c0fe93ffd0f2350a65")
PROTOCOL_TEXT_1_11_1 = _strip_doc_prefixes(PROTOCOL_TEXT)
PROTOCOL_HASH_1_11_1 = bytes.fromhex("8076c53714e01f6e2c1deb9544e7b1fe")
_KNOWN_HASHES = {PROTOCOL_TEXT: PROTOCOL_HASH, PROTOCOL_TEXT_1_11_1: PROTOCOL_HASH_1_11_1}


class Status(enum.IntEnum):
    """The protocol's ``Status`` enum; on the wire the zigzag index (00, 02, 04)."""

    OK = 0
    FAILED = 1
    UNKNOWN = 2


class HandshakeMatch(enum.IntEnum):
    BOTH = 0
    CLIENT = 1
    NONE = 2


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    client_hash: bytes
    client_protocol: str | None
    server_hash: bytes
    meta: dict[str, bytes] | None


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    match: HandshakeMatch
    server_protocol: str | None
    server_hash: bytes | None
    meta: dict[str, bytes] | None


def _check_hash(h: bytes) -> bytes:
    if len(h) != 16:
        raise ValueError(f"an MD5 hash is 16 bytes, got {len(h)}")
    return h


def _opt_string(s: str | None) -> bytes:
    return b"\x00" if s is None else b"\x02" + encode_string(s)


def _opt_meta(m: dict[str, bytes] | None) -> bytes:
    return b"\x00" if m is None else b"\x02" + encode_bytes_map(m)


def encode_handshake_request(req: HandshakeRequest) -> bytes:
    return (
        _check_hash(req.client_hash)
        + _opt_string(req.client_protocol)
        + _check_hash(req.server_hash)
        + _opt_meta(req.meta)
    )


def encode_handshake_response(resp: HandshakeResponse) -> bytes:
    server_hash = b"\x00" if resp.server_hash is None else b"\x02" + _check_hash(resp.server_hash)
    return (
        bytes((int(resp.match) * 2,))
        + _opt_string(resp.server_protocol)
        + server_hash
        + _opt_meta(resp.meta)
    )


def _read_opt(r: Reader, read):
    return None if r.read_union_index(2) == 0 else read()


def read_handshake_request(
    r: Reader, max_protocol_bytes: int | None = None, max_meta_entries: int | None = None
) -> HandshakeRequest:
    """Raises AvroDecodeError when the bytes are not a HandshakeRequest.

    With ``max_protocol_bytes``, a longer client protocol text raises ``LimitExceeded`` (reason
    ``protocol``) before it is decoded; ``max_meta_entries`` bounds the ``meta`` map.
    """
    client_hash = r.read_fixed(16)
    client_protocol = None
    if r.read_union_index(2) == 1:
        n = r.read_long()
        if n < 0:
            raise AvroDecodeError(f"negative length {n}")
        if max_protocol_bytes is not None and n > max_protocol_bytes:
            raise LimitExceeded("protocol", f"a client protocol text of {n} bytes, over the cap of {max_protocol_bytes}")
        try:
            client_protocol = r.read_fixed(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AvroDecodeError("string is not valid UTF-8") from exc
    server_hash = r.read_fixed(16)
    meta = _read_opt(r, lambda: r.read_bytes_map(max_meta_entries))
    return HandshakeRequest(client_hash, client_protocol, server_hash, meta)


def read_handshake_response(r: Reader, max_meta_entries: int | None = 64) -> HandshakeResponse:
    """Raises AvroDecodeError when the bytes are not a HandshakeResponse (``meta`` may hold at
    most ``max_meta_entries`` entries: the server controls it)."""
    match = HandshakeMatch(r.read_enum(3))
    server_protocol = _read_opt(r, r.read_string)
    server_hash = _read_opt(r, lambda: r.read_fixed(16))
    meta = _read_opt(r, lambda: r.read_bytes_map(max_meta_entries))
    return HandshakeResponse(match, server_protocol, server_hash, meta)


__all__ = [
    "AvroDecodeError",
    "HandshakeMatch",
    "HandshakeRequest",
    "HandshakeResponse",
    "ORDERED_PIPELINE",
    "ORDERED_PIPELINE_VERSION",
    "PROTOCOL_HASH",
    "PROTOCOL_HASH_1_11_1",
    "PROTOCOL_TEXT",
    "PROTOCOL_TEXT_1_11_1",
    "Status",
    "compact_json",
    "encode_handshake_request",
    "encode_handshake_response",
    "promises_ordered_pipeline",
    "protocol_hash",
    "read_handshake_request",
    "read_handshake_response",
]
