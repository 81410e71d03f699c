#!/usr/bin/env python3
"""Minimal raw STUN/TURN client (standard library only) for refusal checks.

It speaks plain RFC 5389/5766 over UDP so it can assert the exact error code a
server answers, which coturn's turnutils_uclient does not print for every case.

  stun_probe.py --port P --user U --password W expect-allocate CODE
      Allocate (unauthenticated, then with long-term credentials);
      CODE 0 = success expected, otherwise the error code of the
      authenticated attempt (e.g. 401 for a wrong password).
  stun_probe.py --port P --user U --password W expect-permission CODE PEER_IP
      Allocate, then CreatePermission for PEER_IP; CODE as above (403 for a
      peer the server must not relay to).

Exit 0 when the expectation holds, 1 otherwise (with a message).
"""

import argparse
import hashlib
import hmac
import os
import socket
import struct
import sys
import zlib

MAGIC = 0x2112A442
BINDING, ALLOCATE, CREATE_PERMISSION = 0x001, 0x003, 0x008
CLASS_REQUEST, CLASS_SUCCESS, CLASS_ERROR = 0x000, 0x100, 0x110

A_USERNAME, A_MI, A_ERROR, A_REALM, A_NONCE = 0x0006, 0x0008, 0x0009, 0x0014, 0x0015
A_XOR_PEER, A_XOR_RELAYED, A_REQ_TRANSPORT, A_FINGERPRINT = 0x0012, 0x0016, 0x0019, 0x8028


def _attr(atype: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", atype, len(value)) + value + b"\0" * pad


def xor_address(ip: str, port: int) -> bytes:
    packed = socket.inet_aton(ip)
    xport = port ^ (MAGIC >> 16)
    xip = bytes(a ^ b for a, b in zip(packed, struct.pack("!I", MAGIC)))
    return struct.pack("!BBH", 0, 1, xport) + xip


def encode(method: int, tid: bytes, attrs: list, key: bytes | None) -> bytes:
    body = b"".join(_attr(t, v) for t, v in attrs)
    mtype = method | CLASS_REQUEST
    if key is not None:
        # MESSAGE-INTEGRITY covers the header with a length that includes it.
        header = struct.pack("!HHI", mtype, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += _attr(A_MI, mac)
    header = struct.pack("!HHI", mtype, len(body) + 8, MAGIC) + tid
    crc = (zlib.crc32(header + body) & 0xFFFFFFFF) ^ 0x5354554E
    body += _attr(A_FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HHI", mtype, len(body), MAGIC) + tid + body


def decode(data: bytes):
    mtype, length, magic = struct.unpack("!HHI", data[:8])
    if magic != MAGIC:
        raise ValueError("not a STUN message")
    tid = data[8:20]
    attrs = {}
    pos = 20
    while pos + 4 <= 20 + length:
        atype, alen = struct.unpack("!HH", data[pos : pos + 4])
        attrs.setdefault(atype, data[pos + 4 : pos + 4 + alen])
        pos += 4 + alen + (4 - alen % 4) % 4
    return mtype & 0x0110, mtype & 0x3EEF, tid, attrs


def error_code(attrs) -> int:
    v = attrs.get(A_ERROR)
    if not v:
        return 0
    return (v[2] & 0x7) * 100 + v[3]


class Client:
    def __init__(self, host: str, port: int, user: str, password: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(1.0)
        self.server = (host, port)
        self.user, self.password = user, password
        self.realm = self.nonce = self.key = None

    def transact(self, method: int, attrs: list, auth: bool):
        full = list(attrs)
        key = None
        if auth:
            full += [
                (A_USERNAME, self.user.encode()),
                (A_REALM, self.realm),
                (A_NONCE, self.nonce),
            ]
            key = self.key
        tid = os.urandom(12)
        msg = encode(method, tid, full, key)
        for _ in range(5):
            self.sock.sendto(msg, self.server)
            try:
                while True:
                    data, _addr = self.sock.recvfrom(4096)
                    cls, _m, rtid, rattrs = decode(data)
                    if rtid == tid:
                        return cls, rattrs
            except socket.timeout:
                continue
        raise TimeoutError(f"no answer from {self.server} to method 0x{method:03x}")

    def _learn(self, rattrs) -> None:
        self.nonce = rattrs[A_NONCE]
        self.realm = rattrs.get(A_REALM, self.realm)
        self.key = hashlib.md5(
            f"{self.user}:{self.realm.decode()}:{self.password}".encode()
        ).digest()

    def authed(self, method: int, attrs: list):
        """Sends with long-term credentials: first learns realm and nonce from the
        401 challenge, and follows one 438 (stale nonce)."""
        if self.nonce is None:
            cls, rattrs = self.transact(method, attrs, auth=False)
            if not (cls == CLASS_ERROR and error_code(rattrs) == 401 and A_NONCE in rattrs):
                return cls, rattrs
            self._learn(rattrs)
        cls, rattrs = self.transact(method, attrs, auth=True)
        if cls == CLASS_ERROR and error_code(rattrs) == 438 and A_NONCE in rattrs:
            self._learn(rattrs)
            cls, rattrs = self.transact(method, attrs, auth=True)
        return cls, rattrs

    def allocate(self):
        return self.authed(ALLOCATE, [(A_REQ_TRANSPORT, bytes([17, 0, 0, 0]))])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("mode", choices=["expect-allocate", "expect-permission"])
    ap.add_argument("code", type=int)
    ap.add_argument("peer", nargs="?", default="127.0.0.1")
    a = ap.parse_args()

    c = Client(a.host, a.port, a.user, a.password)
    cls, attrs = c.allocate()
    alloc_code = error_code(attrs) if cls == CLASS_ERROR else 0
    if a.mode == "expect-allocate":
        if alloc_code != a.code:
            print(f"Allocate: expected {a.code or 'success'}, got {alloc_code or 'success'}")
            return 1
        print(f"Allocate answered {alloc_code or 'success'} as expected")
        return 0

    if alloc_code != 0 or A_XOR_RELAYED not in attrs:
        print(f"Allocate failed ({alloc_code}); cannot test CreatePermission")
        return 1
    cls, attrs = c.authed(CREATE_PERMISSION, [(A_XOR_PEER, xor_address(a.peer, 9))])
    code = error_code(attrs) if cls == CLASS_ERROR else 0
    if code != a.code:
        print(f"CreatePermission {a.peer}: expected {a.code or 'success'}, got {code or 'success'}")
        return 1
    print(f"CreatePermission {a.peer} answered {code or 'success'} as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
