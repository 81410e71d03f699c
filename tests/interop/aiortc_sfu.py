#!/usr/bin/env python3
"""A non-browser WebRTC stack in an Icebreaker SFU room: Python aiortc publishes audio and
video and sends a data-channel message; a second aiortc participant receives the video (decoded
frames from the right publisher, per the SFU's `tracks` list), the audio, and the message
stamped with the sender. Signaling is Icebreaker's WebSocket protocol (docs/PROTOCOL.md).

Usage: aiortc_sfu.py HTTP_PORT   (exit 0 on success; prints one line per check)
"""

import asyncio
import json
import sys
import time

import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
ROOM = f"aiortc-{int(time.time() * 1000) % 100000}"
DEADLINE = 40.0
VERBOSE = bool(__import__("os").environ.get("VERBOSE"))
if VERBOSE:
    import logging
    logging.basicConfig(level=logging.DEBUG)


class Member:
    def __init__(self, name, publish):
        self.name = name
        self.publish = publish
        self.peer = None
        self.pc = RTCPeerConnection()
        self.ws = None
        self.tracks = {}  # mid -> (publisher peer, kind)
        self.frames = {}  # (peer, kind) -> count
        self.sizes = set()
        self.data = []
        self.channel = None
        self.negotiating = asyncio.Lock()
        self.offer_pending = False

    async def send(self, data):
        await self.ws.send(json.dumps({"type": "sfu", "data": data}))

    async def run(self):
        self.ws = await websockets.connect(f"ws://127.0.0.1:{PORT}/ws")
        await self.ws.send(json.dumps({"type": "join", "room": ROOM, "topology": "sfu"}))
        if self.publish:
            self.pc.addTrack(AudioStreamTrack())
            self.pc.addTrack(VideoStreamTrack())
        self.channel = self.pc.createDataChannel("icebreaker")
        self.channel.on("message", lambda m: self.data.append(m))

        @self.pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self.consume(track))

        async for text in self.ws:
            msg = json.loads(text)
            if VERBOSE:
                print(self.name, text[:120] if "answer" not in text else text, flush=True)
            if msg.get("seq") and msg["seq"] % 8 == 0:
                await self.ws.send(json.dumps({"type": "ack", "seq": msg["seq"]}))
            if msg["type"] == "joined":
                self.peer = msg["peer"]
                assert msg["topology"] == "sfu", msg
                async with self.negotiating:
                    await self.pc.setLocalDescription(await self.pc.createOffer())
                    self.offer_pending = True
                    await self.send({"kind": "offer", "sdp": self.pc.localDescription.sdp})
            elif msg["type"] == "sfu":
                d = msg["data"]
                if "tracks" in d:
                    self.tracks = {t["mid"]: (t["peer"], t["kind"]) for t in d["tracks"]}
                async with self.negotiating:
                    if d["kind"] == "answer":
                        await self.pc.setRemoteDescription(RTCSessionDescription(d["sdp"], "answer"))
                        self.offer_pending = False
                        if VERBOSE:
                            print(self.name, "answer applied", self.pc.signalingState, self.pc.iceConnectionState, flush=True)
                    elif d["kind"] == "offer" and not self.offer_pending:
                        await self.pc.setRemoteDescription(RTCSessionDescription(d["sdp"], "offer"))
                        await self.pc.setLocalDescription(await self.pc.createAnswer())
                        await self.send({"kind": "answer", "sdp": self.pc.localDescription.sdp})
                    elif d["kind"] == "error":
                        raise RuntimeError(f"{self.name}: SFU error {d}")

    async def consume(self, track):
        mid = None
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                mid = t.mid
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            who = self.tracks.get(mid, ("?", track.kind))[0]
            key = (who, track.kind)
            self.frames[key] = self.frames.get(key, 0) + 1
            if track.kind == "video":
                self.sizes.add((frame.width, frame.height))

    async def close(self):
        try:
            await self.ws.send(json.dumps({"type": "leave"}))
            await self.ws.close()
        except Exception:
            pass
        await self.pc.close()


async def main():
    pub = Member("publisher", True)
    sub = Member("subscriber", False)
    tasks = [asyncio.ensure_future(pub.run())]
    await asyncio.sleep(0.5)
    tasks.append(asyncio.ensure_future(sub.run()))
    start = time.monotonic()
    sent = False
    ok = False
    try:
        while time.monotonic() - start < DEADLINE:
            await asyncio.sleep(0.5)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
            if not sent and pub.channel and pub.channel.readyState == "open" and sub.channel and sub.channel.readyState == "open":
                pub.channel.send("hello from aiortc")
                sent = True
            video = sub.frames.get((pub.peer, "video"), 0)
            audio = sub.frames.get((pub.peer, "audio"), 0)
            got_data = any(json.loads(m) == {"from": pub.peer, "data": "hello from aiortc"} for m in sub.data if isinstance(m, str))
            if video >= 30 and audio >= 50 and got_data:
                ok = True
                break
    finally:
        print(f"publisher {pub.peer} state={pub.pc.connectionState}; subscriber {sub.peer} state={sub.pc.connectionState}")
        print(f"subscriber received frames: {sub.frames}; video sizes {sorted(sub.sizes)}; data {sub.data}")
        for m in (pub, sub):
            await m.close()
        for t in tasks:
            t.cancel()
    if not ok:
        print("FAIL aiortc in an SFU room: the subscriber did not get the publisher's video, audio and message in time")
        return 1
    print(f"ok   aiortc publishes through the SFU: video {sub.frames[(pub.peer, 'video')]} frames "
          f"{sorted(sub.sizes)}, audio {sub.frames[(pub.peer, 'audio')]} frames, data channel stamped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
