"""Files in other encodings: split in their encoding, shipped as UTF-8, offsets in file bytes."""

from __future__ import annotations

import codecs

import pytest

from shipper.avroipc.flume_event import decode_event
from shipper.tail.decode import Transcoder, check_encoding
from shipper.tail.events import EventCutter
from shipper.tail.reader import Cursor, Encoder
from shipper.tail.rules import RuleError, rules_from

from .helpers import drain, make_source, open_channel

TEXT = "2024-05-01 ERROR Überlauf ✓ 一\njava.lang.IllegalStateException: ü\n\tat x.Y(Z.java:1)\n2024-05-01 INFO ok\n"


def cut(data: bytes, encoding: str, blocks, room=10_000, **rules):
    tc = Transcoder(EventCutter(rules_from(**rules), 1 << 20, byte_offset_key="bo"), encoding)
    cur, enc = Cursor(), Encoder(True)
    enc.begin({}, "g")
    out, pos = [], 0
    for n in blocks:
        out += tc.consume(cur, cur.pending + data[pos:pos + n], room, enc)
        while cur.leftover:
            out += tc.consume(cur, cur.pending, room, enc)
        pos += n
    out += tc.flush_partial(cur, enc)
    return [decode_event(e) for e in out], cur, tc


GBK_TEXT = TEXT.replace("✓", "").replace("Ü", "U").replace("ü", "u")


@pytest.mark.parametrize("encoding, bom, codec, text", [
    ("utf-16le", codecs.BOM_UTF16_LE, "utf-16-le", TEXT),
    ("utf-16le", b"", "utf-16-le", TEXT),
    ("utf-16be", codecs.BOM_UTF16_BE, "utf-16-be", TEXT),
    ("utf-16", codecs.BOM_UTF16_BE, "utf-16-be", TEXT),
    ("utf-16", codecs.BOM_UTF16_LE, "utf-16-le", TEXT),
    ("utf-8", codecs.BOM_UTF8, "utf-8", TEXT),
    ("gbk", b"", "gbk", GBK_TEXT),
])
@pytest.mark.parametrize("blocks", ["whole", "bytewise", "sevens"])
def test_lines_are_split_in_the_files_encoding_and_shipped_as_utf8(encoding, bom, codec, text, blocks):
    data = bom + text.encode(codec)
    sizes = {"whole": [len(data)], "bytewise": [1] * len(data), "sevens": [7] * (len(data) // 7 + 1)}[blocks]
    events, cur, tc = cut(data, encoding, sizes, multiline="java")
    want = text.rstrip("\n").split("\n")
    first = "\n".join(want[:3])
    assert [e.body.decode() for e in events] == [first, want[3]]
    assert cur.offset == len(data) and not cur.pending
    # Offsets in headers and ids are file offsets: where each event's bytes start in the file.
    starts = [len(bom), len(bom) + len((first + "\n").encode(codec))]
    assert [e.headers["bo"] for e in events] == [str(s) for s in starts]
    assert [e.headers["id"] for e in events] == [f"g:{s}" for s in starts]
    assert tc.replaced == 0


def test_a_0a_byte_inside_a_utf16_character_is_not_a_line_end():
    text = "\u0a41\u4e00 one line\nsecond\n"  # U+0A41 then U+4E00: the bytes 41 0A 00 4E in UTF-16LE
    data = text.encode("utf-16-le")
    assert b"\n\x00" in data[:4]
    events, cur, _ = cut(data, "utf-16le", [len(data)])
    assert [e.body.decode() for e in events] == ["\u0a41\u4e00 one line", "second"]
    assert cur.offset == len(data)


def test_bytes_that_do_not_decode_are_replaced_and_counted_never_dropped():
    data = b"ok \xff\xfe line\nnext\n"
    events, _, tc = cut(data, "utf-8", [len(data)])
    assert [e.body for e in events] == ["ok \ufffd\ufffd line".encode(), b"next"]
    assert tc.replaced == 2


def test_latin1_is_shipped_as_utf8():
    events, _, _ = cut("café\n".encode("latin-1"), "latin-1", [3, 3])
    assert events[0].body == "café".encode()


def test_held_event_keeps_the_file_offset_at_its_first_byte():
    data = ("a\n\tat x\n".encode("utf-16-le"))
    tc = Transcoder(EventCutter(rules_from(multiline="java"), 1 << 20), "utf-16le")
    cur, enc = Cursor(), Encoder()
    enc.begin({}, "g")
    assert [decode_event(e).body for e in tc.consume(cur, data, 100, enc)] == []
    assert cur.offset == 0 and cur.pending == data  # nothing committed while "a" may still grow
    more = "b\n".encode("utf-16-le")
    assert [decode_event(e).body for e in tc.consume(cur, cur.pending + more, 100, enc)] == [b"a\n\tat x"]
    assert cur.offset == len(data)


@pytest.mark.parametrize("name", ["utf-32", "klingon", "cp500", "utf\x008", "\x00"])  # a NUL: refused, not a traceback
def test_encodings_lines_cannot_be_split_in_are_refused(name):
    with pytest.raises(RuleError):
        check_encoding(name)


def test_utf16_file_with_a_bom_read_restarted_and_appended(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(codecs.BOM_UTF16_LE + "première ligne\n".encode("utf-16-le"))
    ch = open_channel(tmp_path / "state")
    try:
        make_source(ch, log, encoding="utf-16").run_once()
        first = [e.body.decode() for e in drain(ch)]
    finally:
        ch.close()
    with open(log, "ab") as fh:
        fh.write("deuxième ligne\n".encode("utf-16-le"))
    ch = open_channel(tmp_path / "state")
    try:
        src = make_source(ch, log, encoding="utf-16")  # resumes mid-file: no BOM in sight
        src.run_once()
        rest = [e.body.decode() for e in drain(ch)]
        assert src.rule_counts()["replaced"] == 0
    finally:
        ch.close()
    assert first + rest == ["première ligne", "deuxième ligne"]
