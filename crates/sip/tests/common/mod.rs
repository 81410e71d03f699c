//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

/// Turns a message written with `\n` line ends into the wire form with CRLF.
pub fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// The WebRTC audio offer of a Chromium `RTCPeerConnection` (Opus, G.711, telephone-event),
/// as JsSIP sends it in an INVITE.
pub const CHROME_OFFER: &str = "v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS 5f7c8b0e
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 192.168.1.20 46243 typ host generation 0
a=candidate:1853887674 1 udp 1686052607 203.0.113.5 46243 typ srflx raddr 192.168.1.20 rport 46243 generation 0
a=ice-ufrag:Oyef
a=ice-pwd:7fGYD4TLcvNFMjlr4vdXWrrJ
a=ice-options:trickle
a=fingerprint:sha-256 8A:3F:4C:2D:0B:11:72:9E:5E:8D:41:6A:77:0C:DE:91:24:33:5B:70:F1:02:9C:66:AE:10:47:88:3B:C2:D9:5F
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendrecv
a=msid:5f7c8b0e 9b1d2c3a
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1001 cname:abcd
";
