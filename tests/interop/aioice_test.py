#!/usr/bin/env python3
"""Interop test: the aioice library (a third-party Python ICE/TURN client)
against the TURN server under test.

1. TURN relay: aioice.turn.create_turn_endpoint allocates on the server, sends
   a datagram through the relay to a UDP echo peer this script runs on
   127.0.0.1, and must get it back (through a channel binding). Over UDP, TCP
   and TLS, with a static user and with TURN REST API credentials computed
   here (username "<expiry>:<user>", password base64(HMAC-SHA1(secret, username))).
2. ICE: two aioice.Connection objects with transport_policy=RELAY (relay
   candidates only) connect to each other through the server and exchange a
   datagram each way; both nominated pairs must be relay/relay.

Configuration comes from the environment (set by aioice.sh):
  IB_TURN_PORT, IB_SECRET_PORT, IB_TLS_PORT, IB_SECRET_TLS_PORT (may be empty),
  IB_USER, IB_PASS, IB_SECRET, IB_CERT (CA file for TLS).
Exits non-zero with a clear message if any check fails.
"""

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import sys
import time
import traceback

import aioice
from aioice import turn

HOST = "127.0.0.1"
STEP_TIMEOUT = 10.0


def rest_credentials(user: str, secret: str, ttl: int = 600) -> tuple[str, str]:
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class EchoPeer(asyncio.DatagramProtocol):
    """The 'peer' on the far side of the relay: echoes every datagram."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Receiver(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.errors: list = []

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)


async def relay_roundtrip(port, username, password, transport, ssl_ctx, peer_addr) -> str:
    turn_transport, receiver = await asyncio.wait_for(
        turn.create_turn_endpoint(
            Receiver,
            server_addr=(HOST, port),
            username=username,
            password=password,
            transport=transport,
            ssl=ssl_ctx,
        ),
        STEP_TIMEOUT,
    )
    try:
        relayed = turn_transport.get_extra_info("sockname")
        if relayed is None or relayed[0] != HOST:
            raise AssertionError(f"unexpected relayed address {relayed}")
        # Several datagrams: the first goes as a Send indication while the
        # channel is being bound, the later ones as ChannelData.
        for i in range(5):
            payload = f"icebreaker-aioice-{transport}-{i}-{os.urandom(4).hex()}".encode()
            turn_transport.sendto(payload, peer_addr)
            data, addr = await asyncio.wait_for(receiver.queue.get(), STEP_TIMEOUT)
            if data != payload:
                raise AssertionError(f"echo mismatch: sent {payload!r}, got {data!r}")
            if tuple(addr) != tuple(peer_addr):
                raise AssertionError(f"echo came from {addr}, expected {peer_addr}")
        if receiver.errors:
            raise AssertionError(f"send errors: {receiver.errors}")
        return f"relayed {relayed[0]}:{relayed[1]}, 5/5 datagrams echoed"
    finally:
        turn_transport.close()
        await asyncio.sleep(0.05)


async def ice_pair(port, username, password, transport, use_ssl) -> str:
    kwargs = dict(
        components=1,
        turn_server=(HOST, port),
        turn_username=username,
        turn_password=password,
        turn_transport=transport,
        turn_ssl=use_ssl,
        use_ipv6=False,
        transport_policy=aioice.TransportPolicy.RELAY,
    )
    a = aioice.Connection(ice_controlling=True, **kwargs)
    b = aioice.Connection(ice_controlling=False, **kwargs)
    try:
        await asyncio.wait_for(asyncio.gather(a.gather_candidates(), b.gather_candidates()), STEP_TIMEOUT)
        for conn in (a, b):
            types = {c.type for c in conn.local_candidates}
            if types != {"relay"}:
                raise AssertionError(f"expected only relay candidates, got {conn.local_candidates}")
        for src, dst in ((a, b), (b, a)):
            for cand in src.local_candidates:
                await dst.add_remote_candidate(cand)
            await dst.add_remote_candidate(None)
            dst.remote_username = src.local_username
            dst.remote_password = src.local_password
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), STEP_TIMEOUT * 2)
        for name, conn in (("A", a), ("B", b)):
            pair = conn._nominated.get(1)
            if pair is None:
                raise AssertionError(f"{name}: no nominated pair")
            lt, rt = pair.local_candidate.type, pair.remote_candidate.type
            if (lt, rt) != ("relay", "relay"):
                raise AssertionError(f"{name}: nominated pair is {lt}/{rt}, expected relay/relay")
        await a.send(b"ping from A")
        got = await asyncio.wait_for(b.recv(), STEP_TIMEOUT)
        if got != b"ping from A":
            raise AssertionError(f"B received {got!r}")
        await b.send(b"pong from B")
        got = await asyncio.wait_for(a.recv(), STEP_TIMEOUT)
        if got != b"pong from B":
            raise AssertionError(f"A received {got!r}")
        p = a._nominated[1]
        return f"relay/relay {p.local_addr} -> {p.remote_addr}, datagram each way"
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)


async def main() -> int:
    env = os.environ
    port = int(env["IB_TURN_PORT"])
    secret_port = int(env.get("IB_SECRET_PORT") or port)
    tls_port = int(env["IB_TLS_PORT"]) if env.get("IB_TLS_PORT") else None
    secret_tls_port = int(env["IB_SECRET_TLS_PORT"]) if env.get("IB_SECRET_TLS_PORT") else tls_port
    user, password, secret = env["IB_USER"], env["IB_PASS"], env["IB_SECRET"]
    ssl_ctx = None
    if env.get("IB_CERT"):
        ssl_ctx = ssl.create_default_context(cafile=env["IB_CERT"])

    loop = asyncio.get_running_loop()
    peer_transport, _ = await loop.create_datagram_endpoint(EchoPeer, local_addr=(HOST, 0))
    peer_addr = peer_transport.get_extra_info("sockname")[:2]
    print(f"echo peer on {peer_addr[0]}:{peer_addr[1]}", flush=True)

    def static():
        return user, password

    def rest():
        return rest_credentials("aioice-user", secret)

    checks = [
        ("relay UDP, static user", lambda: relay_roundtrip(port, *static(), "udp", None, peer_addr)),
        ("relay UDP, REST secret", lambda: relay_roundtrip(secret_port, *rest(), "udp", None, peer_addr)),
        ("relay TCP, static user", lambda: relay_roundtrip(port, *static(), "tcp", None, peer_addr)),
        ("relay TCP, REST secret", lambda: relay_roundtrip(secret_port, *rest(), "tcp", None, peer_addr)),
    ]
    if tls_port and ssl_ctx:
        checks += [
            ("relay TLS, static user", lambda: relay_roundtrip(tls_port, *static(), "tcp", ssl_ctx, peer_addr)),
            ("relay TLS, REST secret", lambda: relay_roundtrip(secret_tls_port, *rest(), "tcp", ssl_ctx, peer_addr)),
        ]
    checks += [
        ("ICE relay-only over TURN/UDP, static user", lambda: ice_pair(port, *static(), "udp", False)),
        ("ICE relay-only over TURN/TCP, REST secret", lambda: ice_pair(secret_port, *rest(), "tcp", False)),
    ]
    if tls_port and ssl_ctx:
        # aioice's turn_ssl=True uses the default context: aioice.sh points
        # SSL_CERT_FILE at the test certificate so it verifies.
        checks.append(("ICE relay-only over TURN/TLS, static user", lambda: ice_pair(tls_port, *static(), "tcp", True)))

    failed = []
    for name, make in checks:
        t0 = time.monotonic()
        try:
            detail = await make()
            print(f"  ok   {name} ({time.monotonic() - t0:.1f}s): {detail}", flush=True)
        except Exception as exc:  # report every check, then fail at the end
            failed.append(name)
            kind = type(exc).__name__
            print(f"  FAIL {name} ({time.monotonic() - t0:.1f}s): {kind}: {exc}", flush=True)
            if env.get("IB_VERBOSE"):
                traceback.print_exc()
    peer_transport.close()
    print(f"aioice {aioice.__version__}: {len(checks) - len(failed)}/{len(checks)} checks ok", flush=True)
    if failed:
        print("aioice checks failed: " + "; ".join(failed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
