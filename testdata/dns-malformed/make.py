#!/usr/bin/env python3
"""Writes the fixed corpus of malformed and unusual DNS queries (one file per case, raw UDP
payload bytes) that `crates/meridian/tests/dns_malformed.rs` sends to a running GeoDNS server
and `fuzz/` uses as its seed corpus. Run from this directory: python3 make.py"""
import random
import struct

ZONE = b"\x07example\x04test\x00"
WWW = b"\x03www" + ZONE


def header(qid=0x1234, flags=0x0000, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(name=WWW, qtype=1, qclass=1):
    return name + struct.pack(">HH", qtype, qclass)


def opt(payload=1232, version=0, options=b"", rdlen=None, do=False):
    ttl = (version << 16) | (0x8000 if do else 0)
    rdlen = len(options) if rdlen is None else rdlen
    return b"\x00" + struct.pack(">HHIH", 41, payload, ttl, rdlen) + options


def ecs(family=1, source=24, scope=0, addr=b"\x51\x02\x45", length=None):
    body = struct.pack(">HBB", family, source, scope) + addr
    length = len(body) if length is None else length
    return struct.pack(">HH", 8, length) + body


cases = {
    "empty": b"",
    "one-byte": b"\x12",
    "short-header": header()[:11],
    "no-question": header(qd=0),
    "question-missing": header(qd=1),
    "question-cut-in-name": header() + WWW[:6],
    "question-cut-in-type": header() + WWW + b"\x00",
    "label-64": header() + b"\x40" + b"a" * 64 + ZONE + b"\x00\x01\x00\x01",
    "name-over-255": header() + (b"\x3f" + b"a" * 63) * 4 + ZONE + b"\x00\x01\x00\x01",
    "pointer-to-itself": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "pointer-loop-pair": header() + b"\x01a\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
    "pointer-past-end": header() + b"\xc3\xff\x00\x01\x00\x01",
    "pointer-into-header": header() + b"\xc0\x02\x00\x01\x00\x01",
    "reserved-label-type": header() + b"\x80abc" + ZONE + b"\x00\x01\x00\x01",
    "two-questions": header(qd=2) + question() + question(qtype=28),
    "qdcount-65535": header(qd=65535) + question(),
    "ancount-65535": header(an=65535) + question(),
    "arcount-without-records": header(ar=3) + question(),
    "response-bit-set": header(flags=0x8000) + question(),
    "opcode-iquery": header(flags=0x0800) + question(),
    "opcode-status": header(flags=0x1000) + question(),
    "opcode-notify": header(flags=0x2000) + question(qtype=6),
    "opcode-update": header(flags=0x2800) + question(qtype=6),
    "opcode-15": header(flags=0x7800) + question(),
    "truncated-bit-in-query": header(flags=0x0200) + question(),
    "z-bit-set": header(flags=0x0040) + question(),
    "qtype-axfr": header() + question(name=ZONE, qtype=252),
    "qtype-ixfr": header() + question(name=ZONE, qtype=251),
    "qtype-any": header() + question(qtype=255),
    "qtype-zero": header() + question(qtype=0),
    "qtype-65535": header() + question(qtype=65535),
    "qclass-chaos": header() + question(name=b"\x07version\x04bind\x00", qtype=16, qclass=3),
    "qclass-any": header() + question(qclass=255),
    "qclass-zero": header() + question(qclass=0),
    "outside-zone": header() + question(name=b"\x07example\x03com\x00"),
    "root-name": header() + question(name=b"\x00", qtype=2),
    "binary-label": header() + b"\x04\x00\xff\x2e\x80" + ZONE + b"\x00\x01\x00\x01",
    "mixed-case": header() + b"\x03WwW\x07ExAmPlE\x04TEST\x00\x00\x01\x00\x01",
    "trailing-garbage": header() + question() + b"\xde\xad\xbe\xef" * 8,
    "opt-rdlen-past-end": header(ar=1) + question() + opt(rdlen=500),
    "opt-twice": header(ar=2) + question() + opt() + opt(),
    "opt-version-1": header(ar=1) + question() + opt(version=1),
    "opt-version-255": header(ar=1) + question() + opt(version=255),
    "opt-payload-0": header(ar=1) + question() + opt(payload=0),
    "opt-payload-65535": header(ar=1) + question(name=b"\x03big" + ZONE, qtype=16) + opt(payload=65535),
    "opt-named-not-root": header(ar=1) + question() + b"\x01x\x00" + opt()[1:],
    "opt-in-answer-section": header(an=1) + question() + opt(),
    "option-length-past-rdata": header(ar=1) + question() + opt(options=struct.pack(">HH", 10, 40) + b"x" * 8),
    "ecs-family-3": header(ar=1) + question() + opt(options=ecs(family=3)),
    "ecs-family-0": header(ar=1) + question() + opt(options=ecs(family=0, source=0, addr=b"")),
    "ecs-v4-prefix-33": header(ar=1) + question() + opt(options=ecs(source=33, addr=b"\x51\x02\x45\xa0\x00")),
    "ecs-v6-prefix-129": header(ar=1) + question() + opt(options=ecs(family=2, source=129, addr=b"\x20" * 17)),
    "ecs-address-too-long": header(ar=1) + question() + opt(options=ecs(source=8, addr=b"\x51\x02\x45\xa0")),
    "ecs-address-too-short": header(ar=1) + question() + opt(options=ecs(source=24, addr=b"\x51")),
    "ecs-host-bits-set": header(ar=1) + question() + opt(options=ecs(source=20, addr=b"\x51\x02\x4f")),
    "ecs-scope-nonzero": header(ar=1) + question() + opt(options=ecs(scope=24)),
    "ecs-length-lies": header(ar=1) + question() + opt(options=ecs(length=2)),
    "ecs-twice": header(ar=1) + question() + opt(options=ecs() + ecs()),
    "edns-do-bit": header(ar=1) + question() + opt(do=True),
    "cookie-option": header(ar=1) + question() + opt(options=struct.pack(">HH", 10, 8) + b"\x01" * 8),
    "unknown-option": header(ar=1) + question() + opt(options=struct.pack(">HH", 65001, 3) + b"abc"),
    "zeros-512": bytes(512),
    "ones-512": b"\xff" * 512,
}
rng = random.Random(7)
for i in range(8):
    cases[f"random-{i}"] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(12, 1500)))
cases["random-max-udp"] = bytes(rng.getrandbits(8) for _ in range(65507))

for name, data in sorted(cases.items()):
    with open(f"{name}.bin", "wb") as f:
        f.write(data)
print(f"{len(cases)} cases")
