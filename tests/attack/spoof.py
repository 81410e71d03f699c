#!/usr/bin/env python3
"""Send a flood of spoofed-source UDP packets to a STUN/TURN port with a raw socket (root).

Sources are random addresses in 127.0.0.0/8 with random ports (loopback delivers them, the
answers go nowhere), the mix is bare Binding requests, bare Allocate requests, random garbage,
ChannelData for no allocation, STUN with a forged MESSAGE-INTEGRITY and STUN with an unknown
comprehension-required attribute. Usage: spoof.py DST_IP DST_PORT PACKETS [SEED]
Prints one line of JSON: packets and bytes sent (UDP payload bytes).
"""
import json, os, random, socket, struct, sys, time

dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
COOKIE = 0x2112A442


def stun(method, attrs=b""):
    return struct.pack("!HHI", method, len(attrs), COOKIE) + rng.randbytes(12) + attrs


def payload(i):
    k = i % 6
    if k == 0:
        return stun(0x0001)  # Binding, 20 bytes
    if k == 1:
        return stun(0x0003, struct.pack("!HHB3x", 0x0019, 4, 17))  # Allocate, 28 bytes
    if k == 2:
        return rng.randbytes(rng.randint(1, 200))  # garbage
    if k == 3:
        data = rng.randbytes(rng.randint(0, 160))
        return struct.pack("!HH", rng.randint(0x4000, 0x4FFF), len(data)) + data + b"\0" * (-len(data) % 4)
    if k == 4:  # a signed-looking Allocate with a forged integrity
        user = b"alice"
        attrs = struct.pack("!HHB3x", 0x0019, 4, 17)
        attrs += struct.pack("!HH", 0x0006, len(user)) + user + b"\0" * (-len(user) % 4)
        attrs += struct.pack("!HH", 0x0014, 4) + b"r\0\0\0"
        attrs += struct.pack("!HH", 0x0015, 24) + rng.randbytes(24)
        attrs += struct.pack("!HH", 0x0008, 20) + rng.randbytes(20)
        return stun(0x0003, attrs)
    return stun(0x0003, struct.pack("!HH", 0x0042, 4) + b"abcd")  # unknown required -> 420


def packet(i, dst_ip):
    body = payload(i)
    src = bytes([127, rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)])
    sport = rng.randint(1024, 60000)
    if sport == port:
        sport += 1
    udp = struct.pack("!HHHH", sport, port, 8 + len(body), 0) + body
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst_ip)
    return ip + udp, len(body)


def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    dst_ip = socket.inet_aton(dst)
    pool = [packet(i, dst_ip) for i in range(min(n, 60_000))]
    sent = payload_bytes = 0
    t0 = time.time()
    for i in range(n):
        p, size = pool[i % len(pool)]
        try:
            s.sendto(p, (dst, port))
        except (BlockingIOError, OSError):
            continue
        sent += 1
        payload_bytes += size
        if i % 50_000 == 49_999:
            time.sleep(0.01)  # let the receiver keep up a little; the flood stays a flood
    print(json.dumps({"packets": sent, "payload_bytes": payload_bytes,
                      "distinct_sources": len(pool), "secs": round(time.time() - t0, 2)}))


main()
