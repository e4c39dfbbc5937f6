"""The captured byte strings of avro-rpc-wire.md §8 (V1-V10), and ways of feeding them.

Every vector was seen on a real wire between Java peers (Avro 1.11.1). Hex is written with spaces
where the document has them; ``h()`` drops them.
"""

from __future__ import annotations

import struct

from shipper.avroipc import PROTOCOL_HASH, PROTOCOL_HASH_1_11_1, PROTOCOL_TEXT, PROTOCOL_TEXT_1_11_1


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


H = PROTOCOL_HASH.hex()
NAME_BATCH = "16 617070656e644261746368"  # "appendBatch"

# V1: first request, appendBatch([{headers: {}, body: "hello"}]), serial 1.
V1_REQUEST = h(f"00000001 00000002 00000030 {H} 00 {H} 0200 00 {NAME_BATCH} 00000009 02 00 0a 68656c6c6f 00")
V1_EVENTS = [({}, b"hello")]
# V2: its response, BOTH/null/null/null, meta {}, flag false, OK.
V2_RESPONSE = h("00000001 00000003 00000004 00000000 00000001 00 00000002 0000")

# V3: established, serial 2, appendBatch([{headers: {"mode": "fail"}, body: "x"}]) answered FAILED.
V3_REQUEST = h("00000002 00000002 0000000d 0016617070656e644261746368 00000010 0202086d6f6465086661696c00027800")
V3_EVENTS = [({"mode": "fail"}, b"x")]
V3_RESPONSE = h("00000002 00000003 00000000 00000001 00 00000002 0002")

# V4: append({headers: {}, body: "y"}), serial 3, answered OK.
V4_REQUEST = h("00000003 00000002 00000008 000c617070656e64 00000003 000279")
V4_EVENTS = [({}, b"y")]
V4_RESPONSE = h("00000003 00000003 00000000 00000001 00 00000002 0000")

# V5: empty batch, serial 5, answered OK.
V5_REQUEST = h("00000005 00000002 0000000d 0016617070656e644261746368 00000001 00")
V5_RESPONSE = h("00000005 00000003 00000000 00000001 00 00000002 0000")

# V6: system error for serial 4: buffers [], [00], [01 00 ea01 <117-byte text>].
V6_MESSAGE = (
    "org.apache.avro.AvroRuntimeException: Unknown datum type java.lang.RuntimeException:"
    " java.lang.RuntimeException: boom"
)
_v6_body = h("01 00 ea01") + V6_MESSAGE.encode()
V6_RESPONSE = h("00000004 00000003 00000000 00000001 00") + struct.pack(">i", len(_v6_body)) + _v6_body


def _text(t: str) -> bytes:
    return t.encode("utf-8")


# V7: NONE to an unknown client hash (the client had the 8076 protocol, the server 86aa).
V7_NONE_RESPONSE = h("00000001 00000001 0000054c 04 02 ec14") + _text(PROTOCOL_TEXT) + h(f"02 {H} 00")
H_1111 = PROTOCOL_HASH_1_11_1.hex()
V7_FIRST_REQUEST = h(f"00000001 00000002 00000030 {H_1111} 00 {H_1111} 0200 00 {NAME_BATCH} 00000009 02 00 0a 68656c6c6f 00")
_v7_buf0 = h(f"{H_1111} 02 9214") + _text(PROTOCOL_TEXT_1_11_1) + h(f"{H} 0200 00 {NAME_BATCH}")
V7_RESEND = h("00000002 00000002") + struct.pack(">i", len(_v7_buf0)) + _v7_buf0 + h("00000009 02 00 0a 68656c6c6f 00")
V7_BOTH_RESPONSE = h("00000002 00000003 00000004 00000000 00000001 00 00000002 0000")

# V8: CLIENT response (known client hash, wrong serverHash): handshake, then 00, 00, 00.
_v8_buf0 = h("02 02 ec14") + _text(PROTOCOL_TEXT) + h(f"02 {H} 00")
V8_RESPONSE = h("00000001 00000003") + struct.pack(">i", len(_v8_buf0)) + _v8_buf0 + h("00000001 00 00000002 0000")

# V9: deflate, both sides. Client->server: V1, then appendBatch(body "again") on serial 2, then close.
V9_CLIENT_WRITES = [
    h(
        "789c6260606064606060026283b655b71e1d092939f06ff2ff0b9f4cb95219d00580aac4120b0a52f3529c124b9233807a"
        "389918b832527372f21900000000ffff"
    ),
    h("821a02c2bcd85425a62766e63100000000ffff"),
    h("030073c121c1"),
]
V9_SECOND_REQUEST = h(f"00000002 00000002 0000000d 00 {NAME_BATCH} 00000009 02 00 0a 616761696e 00")
V9_SERVER_STREAM = h("789c6260606064606060066216060800f11998181800000000ffff8292cc68c200000000ffff")
V9_SECOND_RESPONSE = h("00000002 00000003 00000000 00000001 00 00000002 0000")


FEED_MODES = ("whole", "bytewise", "trailing")


def pieces(data: bytes, mode: str, trailer: bytes = b"") -> list[bytes]:
    """``data`` as one piece, as single bytes, or as one piece followed by part of a next frame."""
    if mode == "whole":
        return [data]
    if mode == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    if mode == "trailing":
        return [data + trailer[:7]]
    raise ValueError(mode)
