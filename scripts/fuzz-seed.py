#!/usr/bin/env python3
"""Writes the seed corpora of the cargo fuzz targets (fuzz/fuzz_targets/) into
fuzz/corpus/<target>/, from the real binlog files in shared/fixtures/mysql-binlogs/ and from
hand-made values, in the input layouts each target documents. Seeds are named `seed-<sha1>`;
files the fuzzer added to a corpus are left alone.

Usage: scripts/fuzz-seed.py FIXTURES_DIR CORPUS_DIR
"""
import hashlib
import json
import os
import struct
import sys
import zlib

MAX_RECORD = 0xFFFF
MAX_ROWS_DATA = 16 << 10


def u16(b):
    return struct.unpack("<H", b)[0]


def u32(b):
    return struct.unpack("<I", b)[0]


def events(path):
    """(type, body without checksum, crc) of each event of a binlog file."""
    data = open(path, "rb").read()
    if data[:4] != b"\xfebin":
        return
    pos, crc = 4, False
    while pos + 19 <= len(data):
        typ, size = data[pos + 4], u32(data[pos + 9:pos + 13])
        if size < 19 or pos + size > len(data):
            break
        ev = data[pos:pos + size]
        if typ == 15:  # FORMAT_DESCRIPTION_EVENT: does it end with a valid CRC32?
            crc = size >= 24 and zlib.crc32(ev[:-4]) & 0xFFFFFFFF == u32(ev[-4:])
        yield typ, (ev[19:-4] if crc else ev[19:]), crc
        pos += size


def packed_int(b, pos):
    first = b[pos]
    if first < 251:
        return first, pos + 1
    n = {252: 2, 253: 3, 254: 8}.get(first)
    if n is None:
        return None, pos
    return int.from_bytes(b[pos + 1:pos + 1 + n], "little"), pos + 1 + n


ROWS = {  # type: (v2, before bitmap, after bitmap, partial)
    23: (False, False, True, False), 24: (False, True, True, False), 25: (False, True, False, False),
    30: (True, False, True, False), 31: (True, True, True, False), 32: (True, True, False, False),
    39: (True, True, True, True),
}


def row_image_seeds(path):
    """[u16 n][table map body][mode][bitmaps][rows data] for each rows event."""
    maps = {}
    for typ, body, _ in events(path):
        if typ == 19 and len(body) >= 6:
            maps[body[:6]] = body
        elif typ in ROWS and len(body) >= 8 and body[:6] in maps:
            v2, before, after, partial = ROWS[typ]
            pos = 8
            if v2:
                if len(body) < 10:
                    continue
                pos = 8 + u16(body[8:10])
            if pos >= len(body):
                continue
            n, pos = packed_int(body, pos)
            if n is None:
                continue
            blen = (n + 7) // 8
            bitmaps = b""
            for present in (before, after):
                if present:
                    bitmaps += body[pos:pos + blen]
                    pos += blen
            mode = (1 if before else 0) | (2 if after else 0) | (4 if partial else 0)
            tme = maps[body[:6]]
            if len(tme) > MAX_RECORD:
                continue
            head = struct.pack("<H", len(tme)) + tme
            rows = body[pos:pos + MAX_ROWS_DATA]
            yield head + bytes([mode]) + bitmaps + rows
            # the same with information_schema facts, MariaDB's YEAR counting
            yield head + bytes([mode | 8 | 32]) + bitmaps + rows


def binlog_event_seeds(path):
    evs = list(events(path))
    if not evs:
        return
    crc = any(c for _, _, c in evs)
    recs = b"".join(bytes([t]) + struct.pack("<H", len(b)) + b for t, b, _ in evs if len(b) <= MAX_RECORD)
    yield bytes([1 if crc else 0]) + recs
    yield bytes([(1 if crc else 0) | (3 << 2)]) + recs  # with a schema lookup giving facts
    raw = open(path, "rb").read()[4:]
    yield bytes([2]) + raw


# --- JSONB (MySQL binary JSON) -------------------------------------------------------------

def varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def jsonb_scalar(v, large):
    """(type, bytes, inline)"""
    if v is None or v is True or v is False:
        return 4, bytes([{None: 0, True: 1, False: 2}[v]]), True
    if isinstance(v, int):
        if -(1 << 15) <= v < (1 << 15):
            return 5, struct.pack("<h", v), True
        if -(1 << 31) <= v < (1 << 31):
            return 7, struct.pack("<i", v), large
        if v >= (1 << 63):
            return 10, struct.pack("<Q", v), False
        return 9, struct.pack("<q", v), False
    if isinstance(v, float):
        return 11, struct.pack("<d", v), False
    if isinstance(v, str):
        s = v.encode()
        return 12, varlen(len(s)) + s, False
    if isinstance(v, tuple) and v[0] == "opaque":
        return 15, bytes([v[1]]) + varlen(len(v[2])) + v[2], False
    if isinstance(v, dict):
        return (1 if large else 0), jsonb_container(list(v.items()), True, large), False
    if isinstance(v, list):
        return (3 if large else 2), jsonb_container(v, False, large), False
    raise TypeError(v)


def jsonb_container(items, is_obj, large):
    w = 4 if large else 2
    fmt = "<I" if large else "<H"
    n = len(items)
    cur = 2 * w + (n * (w + 2) if is_obj else 0) + n * (1 + w)
    key_entries, value_entries, tail = b"", b"", b""
    if is_obj:
        for k, _ in items:
            kb = k.encode()
            key_entries += struct.pack(fmt, cur) + struct.pack("<H", len(kb))
            tail += kb
            cur += len(kb)
    for it in items:
        v = it[1] if is_obj else it
        t, data, inline = jsonb_scalar(v, large)
        if inline:
            value_entries += bytes([t]) + data.ljust(w, b"\0")
        else:
            value_entries += bytes([t]) + struct.pack(fmt, cur)
            tail += data
            cur += len(data)
    return struct.pack(fmt, n) + struct.pack(fmt, cur) + key_entries + value_entries + tail


def jsonb(v, large=False):
    t, data, _ = jsonb_scalar(v, large)
    return bytes([t]) + data


def jsonb_diff(op, path, value=None):
    p = path.encode()
    out = bytes([op]) + varlen(len(p)) + p  # packed lengths < 251 are one byte
    if op != 2:
        doc = jsonb(value)
        out += bytes([len(doc)]) + doc
    return out


DOCS = [
    None, True, 1, -70000, 1 << 40, (1 << 64) - 1, 1.5, "text", "é\"\\\n",
    [], {}, [1, "a", None, [2, {"k": 3}]],
    {"id": 5, "name": "lamp", "tags": ["x", "y"], "price": 19.9, "nested": {"a": {"b": [True, False]}}},
    ("opaque", 246, bytes([4, 2, 0x80, 0x0f, 0x96])),  # DECIMAL 15.0 as MySQL stores it
    ("opaque", 10, struct.pack("<q", (2024 * 13 + 2) << 46 | 29 << 41)),  # DATE
    ("opaque", 12, struct.pack("<q", 1 << 46)),  # DATETIME
    ("opaque", 11, struct.pack("<q", (12 << 12 | 30 << 6 | 5) << 24)),  # TIME
    ("opaque", 252, b"\x00\x01\xff"),
]


def jsonb_seeds():
    for d in DOCS:
        for large in (False, True):
            yield b"\0" + jsonb(d, large)
    before = jsonb({"a": 1, "b": [1, 2, 3], "c": "x"})
    diffs = [
        jsonb_diff(0, "$.a", 5),
        jsonb_diff(1, "$.d", "new"),
        jsonb_diff(2, "$.c"),
        jsonb_diff(0, "$.b[1]", {"z": None}) + jsonb_diff(1, "$.b[5]", 9),
        jsonb_diff(0, "$", [1]),
    ]
    for d in diffs:
        yield b"\1" + struct.pack("<H", len(before)) + before + d


# --- DECIMAL and temporal values -------------------------------------------------------------

DIG2BYTES = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]


def decimal_bin(text, precision, scale):
    neg = text.startswith("-")
    ip, _, fp = text.lstrip("-").partition(".")
    fp = fp.ljust(scale, "0")[:scale]
    intg = precision - scale
    ip = ip.rjust(intg, "0")[-intg:] if intg else ""
    out = bytearray()
    lead = intg % 9
    if lead:
        out += int(ip[:lead]).to_bytes(DIG2BYTES[lead], "big")
    for i in range(lead, intg, 9):
        out += int(ip[i:i + 9]).to_bytes(4, "big")
    for i in range(0, scale - scale % 9, 9):
        out += int(fp[i:i + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(fp[scale - scale % 9:]).to_bytes(DIG2BYTES[scale % 9], "big")
    out[0] ^= 0x80
    if neg:
        out = bytearray(x ^ 0xFF for x in out)
    return bytes(out)


def frac(usec, fsp):
    n = (fsp + 1) // 2
    if n == 0:
        return b""
    return (usec // 10 ** (6 - 2 * n)).to_bytes(n, "big")


def datetime2(y, mo, d, h, mi, s, usec, fsp):
    ym = y * 13 + mo
    v = (ym << 22 | d << 17 | h << 12 | mi << 6 | s) + 0x8000000000
    return v.to_bytes(5, "big") + frac(usec, fsp)


def time2(h, mi, s, usec, fsp):
    v = (h << 12 | mi << 6 | s) + 0x800000
    return v.to_bytes(3, "big") + frac(usec, fsp)


def decimal_temporal_seeds():
    # [k][type, a, b per column][null bitmap][values]
    cols = [(0, 10 - 1, 2), (5, 6, 0), (3, 3, 0), (7, 0, 0)]
    vals = (decimal_bin("-1234.50", 10, 2) + datetime2(2024, 2, 29, 23, 59, 58, 123456, 6)
            + time2(838, 59, 59, 500000, 3) + struct.pack(">I", 1700000000))
    yield bytes([3]) + b"".join(bytes(c) for c in cols) + b"\0" + vals
    cols = [(0, 64, 30), (1, 0, 0), (2, 0, 0), (4, 0, 0)]
    vals = (decimal_bin("12345678901234567890123456789012345.123456789012345678901234567890", 65, 30)
            + struct.pack("<I", 29 | 2 << 5 | 2024 << 9)[:3]
            + struct.pack("<i", -123456)[:3] + struct.pack("<Q", 20240229235958))
    yield bytes([3]) + b"".join(bytes(c) for c in cols) + b"\0" + vals
    cols = [(6, 0, 0), (8, 0, 0), (0, 0, 0)]  # TIMESTAMP, YEAR, DECIMAL(1,0)
    vals = struct.pack("<I", 0) + b"\x7c" + decimal_bin("-0", 1, 0)
    yield bytes([2]) + b"".join(bytes(c) for c in cols) + b"\0" + vals
    cols = [(9, 10, 2), (7, 6, 0)]  # DECIMAL any size, TIMESTAMP2(6); all NULL, then not
    yield bytes([1]) + b"".join(bytes(c) for c in cols) + b"\x03" + b"\x00" + decimal_bin("1.5", 10, 2) + b"\x00\x00\x00\x01" + frac(999999, 6)


# --- the receiver's bodies -------------------------------------------------------------------

def receiver_seeds():
    def op(seq, kind, i):
        o = {"seq": seq, "op": kind, "db": "shop", "table": "products", "entity": "products",
             "id": {"id": i}, "gtid": "0-1-77", "ts": "2026-11-24T07:37:31Z", "row": 0,
             "file": "mariadb-bin.000001", "offset": 1234}
        if kind == "update":
            o.update(changed=["price"], before={"id": i, "price": "19.90"}, after={"id": i, "price": "17.50"})
        elif kind == "insert":
            o["after"] = {"id": i, "name": "lämp \"x\"", "price": 1.5e300}
        else:
            o["before"] = {"id": i}
        return o

    ops = [op(101, "insert", 1), op(102, "update", 1), op(164, "delete", 1)]
    body = {"version": 1, "batch_id": "mariadb-1-101-164",
            "source": {"flavor": "mariadb", "server_id": 1, "server_uuid": None},
            "first_seq": 101, "last_seq": 164, "count": 3, "entities": {"products": ops}}
    for k in (0, 1):
        yield bytes([k]) + json.dumps(body).encode()
    yield b"\1" + json.dumps(body, indent=1).encode()
    mysql = dict(body, batch_id="mysql-3e11fa47-71ca-11e1-9e33-c80aa9429562-101-164",
                 source={"flavor": "mysql", "server_id": 2, "server_uuid": "3e11fa47-71ca-11e1-9e33-c80aa9429562"})
    yield b"\0" + json.dumps(mysql).encode()
    # Contract v2: operations on a whole entity type among the rows (no id, no row).
    def on_type(seq, kind):
        o = {"seq": seq, "op": kind, "db": "shop", "table": "products", "entity": "products",
             "gtid": "0-1-78", "ts": "2026-11-24T07:37:31Z", "file": "mariadb-bin.000001",
             "offset": 2048, "statement": kind.upper() + " products"}
        if kind == "ddl":
            o.update(columns=[{"name": "id", "type": "int(11)", "nullable": False, "json": False}],
                     key=["id"])
        return o

    v2 = dict(body, version=2, count=5,
              entities={"products": [op(101, "insert", 1), on_type(102, "ddl"), on_type(103, "truncate"),
                                     op(104, "insert", 2), on_type(164, "drop")]})
    yield b"\1" + json.dumps(v2).encode()
    yield b"\0" + b'{"version":3}'
    yield b"\0" + b'{"version":1,"batch_id":"b","count":1,"x":[1,{"y":"\\ud83d\\ude00"}]}'


def main():
    fixtures, corpus = sys.argv[1], sys.argv[2]
    files = sorted(os.path.join(fixtures, f) for f in os.listdir(fixtures) if f != "README.md")
    seeds = {
        "row_image": [s for f in files for s in row_image_seeds(f)],
        "binlog_events": [s for f in files for s in binlog_event_seeds(f)],
        "jsonb": list(jsonb_seeds()),
        "decimal_temporal": list(decimal_temporal_seeds()),
        "receiver_body": list(receiver_seeds()),
    }
    for target, items in seeds.items():
        d = os.path.join(corpus, target)
        os.makedirs(d, exist_ok=True)
        for s in items:
            name = os.path.join(d, "seed-" + hashlib.sha1(s).hexdigest())
            if not os.path.exists(name):
                with open(name, "wb") as f:
                    f.write(s)
        print(f"{target}: {len(items)} seeds ({sum(map(len, items))} bytes)")


if __name__ == "__main__":
    main()
