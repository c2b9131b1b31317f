#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (standard library only).

Seeds are small, meaningful inputs the fuzzer mutates from: the golden records of both hub
protocols (signalr-core/tests/vectors, written by the official JS client and by our encoder),
handshakes, negotiate queries and portable tokens, scripts for the connection state machine,
and Redis backplane payloads. Run it again after changing a target's input layout; fuzzing
finds more on its own (`run.sh`), and only a minimised set belongs in git.
"""

import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "signalr-core", "tests", "vectors")
RS = b"\x1e"


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def vectors(protocol):
    out = []
    for file, key in (("official-client.json", "vectors"), ("server-records.json", "records")):
        with open(os.path.join(VECTORS, file)) as f:
            for record in json.load(f)[key]:
                if record["protocol"] == protocol:
                    prefix = "client" if key == "vectors" else "server"
                    name = prefix + "-" + record["name"].replace(" ", "-")
                    out.append((name, bytes.fromhex(record["hex"])))
    return out


# --- MessagePack, just enough to build records and payloads ---------------------------------

def mp_int(v):
    if 0 <= v <= 0x7F:
        return bytes([v])
    if -32 <= v < 0:
        return struct.pack("b", v)
    if 0 <= v <= 0xFF:
        return b"\xcc" + bytes([v])
    if 0 <= v <= 0xFFFF:
        return b"\xcd" + struct.pack(">H", v)
    if 0 <= v <= 0xFFFFFFFF:
        return b"\xce" + struct.pack(">I", v)
    if v >= 0:
        return b"\xcf" + struct.pack(">Q", v)
    return b"\xd3" + struct.pack(">q", v)


def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def mp_bin(b):
    if len(b) < 256:
        return b"\xc4" + bytes([len(b)]) + b
    return b"\xc5" + struct.pack(">H", len(b)) + b


def mp_array(items):
    assert len(items) < 16
    return bytes([0x90 | len(items)]) + b"".join(items)


def mp_map(pairs):
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def framed(body):
    return varint(len(body)) + body


NIL = b"\xc0"
EMPTY_MAP = b"\x80"


def json_corpus():
    records = vectors("json")
    extra = [
        ("unknown-type", b'{"type":99,"anything":[1]}' + RS + b'{"type":6}' + RS),
        ("unicode-and-escapes", b'{"type":1,"target":"S\\u00e9nd\\n","arguments":["\\ud83d\\ude00",1e300,-0,123456789012345678901234567890]}' + RS),
        ("nested", b'{"type":2,"invocationId":"1","item":' + b"[" * 40 + b"]" * 40 + b"}" + RS),
        ("duplicate-keys", b'{"type":1,"type":3,"invocationId":"a","result":{"k":1,"k":2}}' + RS),
        ("error-and-result", b'{"type":3,"invocationId":"1","error":"e","result":1}' + RS),
        ("missing-target", b'{"type":1,"arguments":[]}' + RS),
        ("not-json", b"{\"type\":" + RS),
        ("incomplete", b'{"type":1,"target":"Echo","arguments":["no separator yet"'),
        ("whitespace", b' \n{ "type" : 1 , "target" : "M" , "arguments" : [ 1 , [ ] , { } ] }\t' + RS),
        ("empty-records", RS + RS),
        ("stream-ids", b'{"type":4,"invocationId":"","target":"Up","arguments":[],"streamIds":["1","2"],"headers":{"a":"b"}}' + RS),
        ("big-sequence", b'{"type":8,"sequenceId":18446744073709551615}' + RS + b'{"type":9,"sequenceId":0}' + RS),
        ("close-reconnect", b'{"type":7,"error":"bye","allowReconnect":true}' + RS),
    ]
    everything = b"".join(r for _, r in records)
    return records + extra + [("all-vectors", everything)]


def msgpack_corpus():
    records = vectors("messagepack")
    long_target = "T" * 200
    extra = [
        ("two-byte-prefix", framed(mp_array([mp_int(1), EMPTY_MAP, NIL, mp_str(long_target), mp_array([])]))),
        ("unknown-type", framed(mp_array([mp_int(99), mp_int(1)])) + framed(mp_array([mp_int(6)]))),
        ("timestamp-ext", framed(mp_array([mp_int(2), EMPTY_MAP, mp_str("1"), b"\xd6\xff" + struct.pack(">I", 1700000000)]))),
        ("other-ext", framed(mp_array([mp_int(3), EMPTY_MAP, mp_str("1"), mp_int(3), b"\xd5\x05ab"]))),
        ("non-string-keys", framed(mp_array([mp_int(3), EMPTY_MAP, mp_str("1"), mp_int(3), mp_map([(mp_int(1), mp_str("one")), (NIL, NIL)])]))),
        ("floats", framed(mp_array([mp_int(1), EMPTY_MAP, NIL, mp_str("F"), mp_array([b"\xca" + struct.pack(">f", 1.5), b"\xcb" + struct.pack(">d", float("nan")), b"\xcb" + struct.pack(">d", -0.0)])]))),
        ("nested", framed(mp_array([mp_int(2), EMPTY_MAP, mp_str("1"), b"\x91" * 60 + b"\x90"]))),
        ("headers", framed(mp_array([mp_int(5), mp_map([(mp_str("k"), mp_str("v")), (mp_str("k"), mp_str("w"))]), mp_str("9")]))),
        ("short-invocation", framed(mp_array([mp_int(1), EMPTY_MAP, NIL, mp_str("M"), mp_array([mp_int(1)])]))),
        ("empty-record", b"\x00"),
        ("empty-array", framed(b"\x90")),
        ("incomplete", varint(50) + b"\x95\x01"),
        ("huge-prefix", b"\xff\xff\xff\xff\x07"),
        ("too-long-prefix", b"\xff\xff\xff\xff\xff\x01"),
        ("negative-ack", framed(mp_array([mp_int(8), mp_int(-1)])) + framed(mp_array([mp_int(9), mp_int(2**63)]))),
        ("lying-array", framed(b"\xdd\xff\xff\xff\xff\x01")),
        ("str8-target", framed(mp_array([mp_int(1), EMPTY_MAP, mp_str(""), b"\xd9\x04Echo", b"\xdc\x00\x01\xc3", NIL]))),
    ]
    everything = b"".join(r for _, r in records)
    return records + extra + [("all-vectors", everything)]


def handshake_corpus():
    json_rest = b'{"type":6}' + RS + b'{"type":1,"target":"Echo","arguments":["x"]}' + RS
    mp_rest = framed(mp_array([mp_int(6)])) + framed(mp_array([mp_int(1), EMPTY_MAP, NIL, mp_str("Echo"), mp_array([mp_str("x")])]))
    return [
        ("json-v1", b'{"protocol":"json","version":1}' + RS),
        ("json-v2-then-messages", b'{"protocol":"json","version":2}' + RS + json_rest),
        ("messagepack-v1", b'{"protocol":"messagepack","version":1}' + RS + mp_rest),
        ("messagepack-v2", b'{"protocol":"messagepack","version":2}' + RS),
        ("unknown-protocol", b'{"protocol":"xml","version":1}' + RS + b"rest"),
        ("extra-fields", b'{"version":1,"protocol":"json","extra":[1,{"a":null}]}' + RS),
        ("missing-version", b'{"protocol":"json"}' + RS),
        ("wrong-types", b'{"protocol":1,"version":"1"}' + RS),
        ("not-json", b"hello" + RS),
        ("partial", b'{"protocol":"mess'),
        ("oversized", b'{"protocol":"json","version":1,"padding":"' + b"x" * 64 + b'"}' + RS),
        ("escaped-name", b'{"protocol":"\\u006aso\\u006e","version":1}' + RS + json_rest),
        ("negative-version", b'{"protocol":"json","version":-1}' + RS),
    ]


def length_prefix_corpus():
    return [
        ("zero", b"\x00"),
        ("one-byte-max", b"\x7f"),
        ("two-bytes", b"\x80\x01"),
        ("non-minimal", b"\x80\x80\x00"),
        ("i32-max", b"\xff\xff\xff\xff\x07"),
        ("past-i32-max", b"\xff\xff\xff\xff\x08"),
        ("six-bytes", b"\xff\xff\xff\xff\xff\x01"),
        ("incomplete", b"\xff\xff\xff"),
        ("values", struct.pack("<QQQ", 2**31 - 1, 2**35 - 1, 2**64 - 1)),
    ]


def token(key, connection_id, stateful, issued_at):
    body = bytes([1]) + connection_id + bytes([1 if stateful else 0]) + struct.pack(">Q", issued_at)
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=")


def negotiate_corpus():
    key = b"cluster key"
    valid = token(key, bytes(range(16)), True, 1_700_000_000)
    return [
        ("negotiate-v1", b"negotiateVersion=1"),
        ("stateful", b"negotiateVersion=1&useStatefulReconnect=true"),
        ("transport", b"id=AAECAwQFBgcICQoLDA0ODw&access_token=eyJhbGciOi.x.y&_=1700000000000"),
        ("case-and-repeats", b"ID=a&id=b&NEGOTIATEVERSION=2&usestatefulreconnect=TRUE&Access_Token=ignored"),
        ("percent-encoding", b"id=a%2Bb%20c+d&negotiateVersion=%31&access_token=%F0%9F%98%80%zz"),
        ("bad-version", b"negotiateVersion=-3&negotiateVersion=one"),
        ("empty-pairs", b"&&=&id&=x&negotiateVersion="),
        # A key length, the key, then a token it verifies (see `negotiate_query`).
        ("valid-token", bytes([len(key)]) + key + valid),
        ("tampered-token", bytes([len(key)]) + key + valid[:-1] + (b"A" if valid[-1:] != b"A" else b"B")),
        ("token-without-key", bytes([0]) + token(b"", bytes(16), False, 0)),
    ]


# --- Scripts for the connection state machine (see `Harness::step` in fuzzing.rs) -----------

def config(keep_alive=15000, client_timeout=15000, handshake=15000, grace=5000, max_size=4096,
           detailed=1, transport=0):
    return struct.pack("<HHHHH", keep_alive, client_timeout, handshake, grace, max_size - 256) + bytes([detailed, transport])


ONE_PIECE = b"\x00"


def advance(ms):
    return b"\x00" + struct.pack("<H", ms)


TO_DEADLINE = b"\x01"


def hello(protocol):  # 0: json, 2: messagepack
    return b"\x02" + bytes([protocol, 2]) + ONE_PIECE


def numbered(kind, pieces=ONE_PIECE):
    return b"\x02" + bytes([kind]) + pieces


PING = b"\x02\x05" + ONE_PIECE


def client_close():
    return b"\x02\x06\x01" + ONE_PIECE


def ack(delta, selector):
    return b"\x02\x07" + bytes([delta, selector]) + ONE_PIECE


def sequence(delta, selector):
    return b"\x02\x08" + bytes([delta, selector]) + ONE_PIECE


def resend(back, count):
    return b"\x03" + bytes([back]) + ONE_PIECE * (1 + count)


def poll(answers=b""):
    return b"\x05" + answers


ACCEPT = b"\x02\x00\x00"
ACCEPT_STATEFUL = b"\x01" + struct.pack("<H", 1000)
ACCEPT_SMALL_BUFFER = b"\x01" + struct.pack("<H", 120)
DISPATCHED = b"\x06"


def server_sends(count, length):
    return b"\x07" + bytes([count - 1, length // 4])


LOST = b"\x08"
REPLACED = b"\x09"
DRAIN = b"\x0a\x00"
WRITER_STEP = b"\x0a\x01"
SERVER_CLOSE = b"\x0b\x01"


def stateful_corpus():
    reconnect = (
        poll(ACCEPT_STATEFUL) + DRAIN
        + server_sends(3, 100) + numbered(0) + numbered(1) + poll(b"\x00\x00")
        + ack(1, 1) + poll() + advance(1000) + DRAIN
        + LOST + advance(2000) + REPLACED + DRAIN
        + resend(2, 2) + poll(b"\x00\x00") + ack(0, 1) + poll() + WRITER_STEP
    )
    return [
        ("json-stateful-reconnect", config() + hello(0) + reconnect),
        ("msgpack-stateful-reconnect", config() + hello(2) + reconnect),
        ("json-pings-and-timeout", config(1000, 3000) + hello(0) + poll(ACCEPT) + DRAIN
            + PING + poll() + TO_DEADLINE + TO_DEADLINE + TO_DEADLINE + TO_DEADLINE + TO_DEADLINE),
        ("dispatch-suspends-timeout", config(1000, 2000) + hello(0) + poll(ACCEPT) + numbered(0)
            + poll(b"\x01") + advance(20000) + DRAIN + DISPATCHED + TO_DEADLINE + TO_DEADLINE),
        ("long-polling", config(transport=2) + hello(0) + poll(ACCEPT) + advance(30000) + DRAIN
            + numbered(2) + poll(b"\x00") + LOST),
        ("sse-server-close", config(transport=1) + hello(2) + poll(ACCEPT) + numbered(3) + poll(b"\x00")
            + SERVER_CLOSE + DRAIN),
        ("ack-past-sent", config() + hello(0) + poll(ACCEPT_STATEFUL) + server_sends(1, 8) + ack(3, 2) + poll()),
        ("ack-one-past-sent", config() + hello(0) + poll(ACCEPT_STATEFUL) + server_sends(2, 8) + ack(1, 1)
            + ack(1, 2) + poll()),
        ("input-dropped-on-reconnect", config() + hello(0) + poll(ACCEPT_STATEFUL) + numbered(0) + numbered(1, b"\x01\x05")
            + LOST + REPLACED + poll(b"\x00") + DRAIN),
        ("sequence-zero", config() + hello(2) + poll(ACCEPT_STATEFUL) + sequence(0, 0) + poll()),
        ("sequence-ahead", config() + hello(0) + poll(ACCEPT_STATEFUL) + numbered(0) + poll(b"\x00")
            + sequence(3, 3) + poll()),
        ("msgpack-huge-ack", config() + hello(2) + poll(ACCEPT_STATEFUL) + ack(1, 5) + poll()),
        ("backpressure", config() + hello(0) + poll(ACCEPT_SMALL_BUFFER) + server_sends(8, 60)
            + server_sends(2, 200) + ack(1, 1) + poll() + server_sends(8, 60) + LOST + REPLACED + DRAIN),
        ("grace-expires", config(grace=100) + hello(0) + poll(ACCEPT_STATEFUL) + server_sends(2, 16)
            + LOST + TO_DEADLINE + REPLACED + DRAIN),
        ("handshake-timeout", config(handshake=50) + TO_DEADLINE + DRAIN),
        ("garbage-after-handshake", config() + hello(0) + poll(ACCEPT) + b"\x04\x09not json\x1e" + poll()),
        ("refused", config() + hello(0) + poll(b"\x08") + DRAIN + numbered(0) + poll()),
        ("client-close", config() + hello(0) + poll(ACCEPT_STATEFUL) + client_close() + poll() + SERVER_CLOSE),
    ]


# --- Redis backplane payloads -----------------------------------------------------------------

def redis_corpus():
    json_record = b'{"type":1,"target":"Send","arguments":["hi"]}' + RS
    mp_record = framed(mp_array([mp_int(1), EMPTY_MAP, NIL, mp_str("Send"), mp_array([mp_str("hi")]), mp_array([])]))
    serialized = mp_map([(mp_str("json"), mp_bin(json_record)), (mp_str("messagepack"), mp_bin(mp_record))])
    json_completion = b'{"type":3,"invocationId":"7","result":42}' + RS
    mp_completion = framed(mp_array([mp_int(3), EMPTY_MAP, mp_str("7"), mp_int(3), mp_int(42)]))
    return [
        ("invocation", mp_array([mp_array([]), serialized])),
        ("invocation-excluding", mp_array([mp_array([mp_str("conn1"), mp_str("conn2")]), serialized])),
        ("client-result-invocation", mp_array([mp_array([]), serialized, mp_str("7"), mp_str("Hub:internal:return:server1")])),
        ("invocation-unknown-protocol", mp_array([mp_array([]), mp_map([(mp_str("xml"), mp_bin(b"<x/>"))])])),
        ("invocation-extra-items", mp_array([mp_array([]), serialized, mp_str("7")])),
        ("group-add", mp_array([mp_int(1), mp_str("server1"), mp_int(1), mp_str("room"), mp_str("conn1")])),
        ("group-remove-big-id", mp_array([mp_int(2**31 - 1), mp_str("server1"), mp_int(2), mp_str("room"), mp_str("conn1"), NIL])),
        ("group-bad-action", mp_array([mp_int(-1), mp_str("s"), mp_int(3), mp_str("g"), mp_str("c")])),
        ("ack", mp_array([mp_int(5)])),
        ("ack-out-of-range", mp_array([mp_int(2**40)])),
        ("completion-json", mp_array([mp_str("json"), mp_bin(json_completion)])),
        ("completion-messagepack", mp_array([mp_str("messagepack"), mp_bin(mp_completion)])),
        ("lying-lengths", b"\xdd\xff\xff\xff\xff\xdf\xff\xff\xff\xff"),
    ]


def ws_frame(first, payload, mask=b"\x37\xfa\x21\x3d", length=None):
    """A client frame; `length` overrides the length written in the header."""
    n = len(payload) if length is None else length
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack(">Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def websocket_corpus():
    """The first byte picks the message cap (bits 0-1) and the read size (bits 2-3)."""
    handshake = b'{"protocol":"json","version":1}' + RS
    ping_record = b'{"type":6}' + RS
    return [
        ("handshake-and-ping", b"\x0f" + ws_frame(0x81, handshake) + ws_frame(0x81, ping_record)),
        ("control-frames", b"\x0f" + ws_frame(0x89, b"hello") + ws_frame(0x8A, b"") + ws_frame(0x81, ping_record)),
        ("fragmented", b"\x07" + ws_frame(0x01, b"{\"type\"") + ws_frame(0x89, b"p") + ws_frame(0x00, b":6}") + ws_frame(0x80, RS)),
        ("binary-16-bit-length", b"\x0f" + ws_frame(0x82, bytes(range(256)) * 2)),
        ("close-normal", b"\x0f" + ws_frame(0x88, struct.pack(">H", 1000) + b"bye")),
        ("close-bad-code", b"\x0f" + ws_frame(0x88, struct.pack(">H", 1005))),
        ("over-the-cap", b"\x00" + ws_frame(0x82, b"x" * 40)),
        ("64-bit-length-lie", b"\x0f" + ws_frame(0x82, b"x", length=1 << 40)),
        ("unmasked", b"\x0f" + bytes([0x81, 0x03]) + b"abc"),
        ("reserved-bits", b"\x0f" + ws_frame(0xC1, b"x")),
        ("invalid-utf8", b"\x0f" + ws_frame(0x81, b"\xff\xfe")),
        ("cut-off", b"\x0f" + ws_frame(0x81, handshake)[:-4]),
    ]


def main():
    for name, data in json_corpus():
        write("json_decode", name, data)
        write("json_roundtrip", name, data)
    for name, data in msgpack_corpus():
        write("msgpack_decode", name, data)
        write("msgpack_roundtrip", name, data)
    for target, corpus in (
        ("handshake", handshake_corpus()),
        ("length_prefix", length_prefix_corpus()),
        ("negotiate_query", negotiate_corpus()),
        ("stateful", stateful_corpus()),
        ("redis_payloads", redis_corpus()),
        ("websocket_frames", websocket_corpus()),
    ):
        for name, data in corpus:
            write(target, name, data)
    # libFuzzer starts with the empty input; so does the replay on stable.
    for target in os.listdir(os.path.join(HERE, "corpus")):
        write(target, "empty", b"")


if __name__ == "__main__":
    main()
