//! Session descriptions (RFC 8866, formerly RFC 4566) for the media bridge.
//!
//! [`Sdp`] keeps every line in order (unknown ones included) and serializes back with CRLF.
//! Typed helpers read what the bridge needs: media kind/port/proto/formats, `c=`, `rtpmap`,
//! `fmtp`, direction, ICE and DTLS attributes, `mid`, `group`, `rtcp-mux`.
//!
//! The bridge's two steps:
//! * [`plain_offer`]: from a WebRTC audio offer, a plain-RTP offer (`RTP/AVP`) toward the SIP
//!   side with the codecs both sides do without transcoding (PCMU, PCMA, Opus) and
//!   telephone-event (RFC 4733), no ICE/DTLS attributes, `a=sendrecv`, `a=ptime:20`;
//! * [`read_plain_answer`]: the codec chosen, the remote RTP address and telephone-event from
//!   the plain answer (or from a plain offer: the first codec is the preferred one).

use core::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::Error;

/// Largest SDP body accepted, in bytes.
pub const MAX_SDP: usize = 32 * 1024;
/// Most lines accepted.
pub const MAX_LINES: usize = 1024;

/// One `x=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The type letter (`v`, `o`, `c`, `m`, `a`, …).
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

impl Line {
    /// A line `kind=value`.
    pub fn new(kind: char, value: impl Into<String>) -> Line {
        Line {
            kind,
            value: value.into(),
        }
    }

    /// For an `a=` line, the attribute name and value (`a=rtpmap:0 PCMU/8000` →
    /// `("rtpmap", Some("0 PCMU/8000"))`, `a=rtcp-mux` → `("rtcp-mux", None)`).
    pub fn attribute(&self) -> Option<(&str, Option<&str>)> {
        if self.kind != 'a' {
            return None;
        }
        Some(match self.value.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (self.value.as_str(), None),
        })
    }
}

/// A media section: its `m=` line and the lines after it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The `m=` line's value (`audio 9 UDP/TLS/RTP/SAVPF 111 0 8`).
    pub m: String,
    /// The other lines of the section, in order.
    pub lines: Vec<Line>,
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// The session-level lines (starting with `v=`), in order.
    pub session: Vec<Line>,
    /// The media sections, in order.
    pub media: Vec<Media>,
}

/// A media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    fn from_attr(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// An `a=rtpmap` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type.
    pub pt: u8,
    /// The encoding name as written (`opus`, `PCMU`, `telephone-event`).
    pub encoding: String,
    /// The clock rate.
    pub clock: u32,
    /// The channel count, if given.
    pub channels: Option<u8>,
}

fn parse_pt(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

impl RtpMap {
    /// Parses `<pt> <encoding>/<clock>[/<channels>]`.
    pub fn parse(v: &str) -> Result<RtpMap, Error> {
        let bad = Error::BadSdp("rtpmap");
        let (pt, rest) = v.split_once(' ').ok_or(bad.clone())?;
        let pt = parse_pt(pt).ok_or(bad.clone())?;
        let mut it = rest.trim().split('/');
        let encoding = it.next().filter(|e| !e.is_empty()).ok_or(bad.clone())?;
        let clock = it
            .next()
            .and_then(|c| c.parse::<u32>().ok())
            .ok_or(bad.clone())?;
        let channels = match it.next() {
            None => None,
            Some(c) => Some(c.parse::<u8>().map_err(|_| bad.clone())?),
        };
        if it.next().is_some() {
            return Err(bad);
        }
        Ok(RtpMap {
            pt,
            encoding: encoding.to_string(),
            clock,
            channels,
        })
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.pt, self.encoding, self.clock)?;
        if let Some(c) = self.channels {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// A `c=` line: network type IN, address type, address (any `/ttl` removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The address as written (an IP address or a name).
    pub address: String,
    /// The address when it is an IP address.
    pub ip: Option<IpAddr>,
}

impl Connection {
    /// Parses `IN IP4 192.0.2.1` (or IP6).
    pub fn parse(v: &str) -> Result<Connection, Error> {
        let bad = Error::BadSdp("c=");
        let mut it = v.split(' ');
        let (Some("IN"), Some(at @ ("IP4" | "IP6")), Some(addr), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad);
        };
        let address = addr.split('/').next().unwrap_or("");
        if address.is_empty() {
            return Err(bad);
        }
        let ip: Option<IpAddr> = address.parse().ok();
        if ip.is_some_and(|ip| ip.is_ipv4() != (at == "IP4")) {
            return Err(bad);
        }
        Ok(Connection {
            address: address.to_string(),
            ip,
        })
    }
}

fn attr_values<'a, 'n>(
    lines: &'a [Line],
    name: &'n str,
) -> impl Iterator<Item = Option<&'a str>> + use<'a, 'n> {
    lines
        .iter()
        .filter_map(Line::attribute)
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn direction_of(lines: &[Line]) -> Option<Direction> {
    lines
        .iter()
        .filter_map(Line::attribute)
        .find_map(|(n, v)| v.is_none().then(|| Direction::from_attr(n)).flatten())
}

fn connection_of(lines: &[Line]) -> Result<Option<Connection>, Error> {
    lines
        .iter()
        .find(|l| l.kind == 'c')
        .map(|l| Connection::parse(&l.value))
        .transpose()
}

impl Media {
    /// A section with the given `m=` value and no other lines.
    pub fn new(m: impl Into<String>) -> Media {
        Media {
            m: m.into(),
            lines: Vec::new(),
        }
    }

    fn field(&self, i: usize) -> &str {
        self.m.split(' ').nth(i).unwrap_or("")
    }

    /// The media kind (`audio`, `video`, `application`).
    pub fn kind(&self) -> &str {
        self.field(0)
    }

    /// The port (0 = rejected or, with `a=bundle-only`, bundled).
    pub fn port(&self) -> u16 {
        self.field(1)
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The transport protocol (`RTP/AVP`, `UDP/TLS/RTP/SAVPF`, …).
    pub fn proto(&self) -> &str {
        self.field(2)
    }

    /// The formats (payload types for RTP) in preference order.
    pub fn formats(&self) -> impl Iterator<Item = &str> {
        self.m.split(' ').skip(3).filter(|f| !f.is_empty())
    }

    /// Every value of attribute `name` (`None` for a flag), in order.
    pub fn attributes<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = Option<&'a str>> + use<'a, 'n> {
        attr_values(&self.lines, name)
    }

    /// The first value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes(name).flatten().next()
    }

    /// Whether the flag attribute `name` is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attributes(name).next().is_some()
    }

    /// The section's `c=`, if any.
    pub fn connection(&self) -> Result<Option<Connection>, Error> {
        connection_of(&self.lines)
    }

    /// Every `a=rtpmap`, in order; malformed ones are errors.
    pub fn rtpmaps(&self) -> Result<Vec<RtpMap>, Error> {
        self.attributes("rtpmap")
            .map(|v| RtpMap::parse(v.unwrap_or("")))
            .collect()
    }

    /// The `a=fmtp` parameters of payload type `pt`.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attributes("fmtp").flatten().find_map(|v| {
            let (p, params) = v.split_once(' ')?;
            (parse_pt(p) == Some(pt)).then_some(params.trim())
        })
    }

    /// The section's own direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.lines)
    }

    /// `a=mid`.
    pub fn mid(&self) -> Option<&str> {
        self.attribute("mid")
    }

    /// `a=ice-ufrag`.
    pub fn ice_ufrag(&self) -> Option<&str> {
        self.attribute("ice-ufrag")
    }

    /// `a=ice-pwd`.
    pub fn ice_pwd(&self) -> Option<&str> {
        self.attribute("ice-pwd")
    }

    /// `a=fingerprint` as (hash function, value).
    pub fn fingerprint(&self) -> Option<(&str, &str)> {
        self.attribute("fingerprint")?.split_once(' ')
    }

    /// `a=setup` (`actpass`, `active`, `passive`).
    pub fn setup(&self) -> Option<&str> {
        self.attribute("setup")
    }

    /// Every `a=candidate` value.
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        self.attributes("candidate").flatten()
    }

    /// Whether `a=rtcp-mux` is present.
    pub fn rtcp_mux(&self) -> bool {
        self.has_attribute("rtcp-mux")
    }
}

impl Sdp {
    /// Parses an SDP body. Lines end with CRLF or LF; the first must be `v=0`; every line is
    /// `<letter>=<value>`; `m=` lines have at least kind, port and proto. Empty lines are
    /// skipped.
    pub fn parse(body: &[u8]) -> Result<Sdp, Error> {
        if body.len() > MAX_SDP {
            return Err(Error::BadSdp("size"));
        }
        let text = std::str::from_utf8(body).map_err(|_| Error::BadSdp("encoding"))?;
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        let mut count = 0usize;
        for raw in text.split('\n') {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_LINES {
                return Err(Error::BadSdp("line count"));
            }
            let mut chars = line.chars();
            let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
                return Err(Error::BadSdp("line"));
            };
            let value = chars.as_str();
            if !kind.is_ascii_lowercase() || value.contains(['\r', '\0']) {
                return Err(Error::BadSdp("line"));
            }
            if count == 1 && (kind != 'v' || value != "0") {
                return Err(Error::BadSdp("version"));
            }
            if kind == 'm' {
                let fields: Vec<&str> = value.split(' ').collect();
                let port_ok = fields.get(1).is_some_and(|p| {
                    let mut it = p.split('/');
                    it.next().is_some_and(|p| p.parse::<u16>().is_ok())
                        && it.all(|n| n.parse::<u16>().is_ok())
                });
                if fields.len() < 3 || fields.iter().any(|f| f.is_empty()) || !port_ok {
                    return Err(Error::BadSdp("m="));
                }
                sdp.media.push(Media::new(value));
            } else if let Some(m) = sdp.media.last_mut() {
                m.lines.push(Line::new(kind, value));
            } else {
                sdp.session.push(Line::new(kind, value));
            }
        }
        if count == 0 {
            return Err(Error::BadSdp("version"));
        }
        Ok(sdp)
    }

    /// Serializes with CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Every value of session-level attribute `name`.
    pub fn attributes<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = Option<&'a str>> + use<'a, 'n> {
        attr_values(&self.session, name)
    }

    /// The first value of session-level attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes(name).flatten().next()
    }

    /// The session-level `c=`.
    pub fn connection(&self) -> Result<Option<Connection>, Error> {
        connection_of(&self.session)
    }

    /// The `c=` that applies to `media`: its own, else the session's.
    pub fn media_connection(&self, media: &Media) -> Result<Option<Connection>, Error> {
        match media.connection()? {
            Some(c) => Ok(Some(c)),
            None => self.connection(),
        }
    }

    /// The direction of `media`: its own attribute, else the session's, else sendrecv.
    pub fn media_direction(&self, media: &Media) -> Direction {
        media
            .direction()
            .or_else(|| direction_of(&self.session))
            .unwrap_or(Direction::SendRecv)
    }

    /// `a=group` values as (semantics, identification tags): `BUNDLE 0 1` → (`BUNDLE`, [`0`, `1`]).
    pub fn groups(&self) -> Vec<(&str, Vec<&str>)> {
        self.attributes("group")
            .flatten()
            .filter_map(|v| {
                let mut it = v.split(' ');
                let sem = it.next()?;
                Some((sem, it.filter(|t| !t.is_empty()).collect()))
            })
            .collect()
    }

    /// Session-level `a=fingerprint` as (hash function, value).
    pub fn fingerprint(&self) -> Option<(&str, &str)> {
        self.attribute("fingerprint")?.split_once(' ')
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.session {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        for m in &self.media {
            write!(f, "m={}\r\n", m.m)?;
            for l in &m.lines {
                write!(f, "{}={}\r\n", l.kind, l.value)?;
            }
        }
        Ok(())
    }
}

/// The codecs the bridge passes through without transcoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecName {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus, dynamic payload type, 48000/2.
    Opus,
}

impl CodecName {
    fn matches(self, map: &RtpMap) -> bool {
        let e = map.encoding.as_str();
        match self {
            CodecName::Pcmu => e.eq_ignore_ascii_case("PCMU") && map.clock == 8000,
            CodecName::Pcma => e.eq_ignore_ascii_case("PCMA") && map.clock == 8000,
            CodecName::Opus => {
                e.eq_ignore_ascii_case("opus") && map.clock == 48000 && map.channels == Some(2)
            }
        }
    }

    fn clock(self) -> u32 {
        match self {
            CodecName::Pcmu | CodecName::Pcma => 8000,
            CodecName::Opus => 48000,
        }
    }
}

/// A codec of an audio section, with its payload type there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// Which codec.
    pub name: CodecName,
    /// Its payload type in that description.
    pub pt: u8,
    /// Its rtpmap (synthesised for static payload types without one).
    pub rtpmap: RtpMap,
    /// Its `a=fmtp` parameters, if any.
    pub fmtp: Option<String>,
}

/// A telephone-event (RFC 4733) payload type of an audio section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Its payload type.
    pub pt: u8,
    /// Its clock rate (8000 with G.711, 48000 with Opus).
    pub clock: u32,
    /// Its `a=fmtp` (`0-16`), if any.
    pub fmtp: Option<String>,
}

/// The known codecs and telephone-events of `media`, in the section's preference order.
pub fn audio_codecs(media: &Media) -> Result<(Vec<Codec>, Vec<TelephoneEvent>), Error> {
    let maps = media.rtpmaps()?;
    let mut codecs = Vec::new();
    let mut events = Vec::new();
    for f in media.formats() {
        let Some(pt) = parse_pt(f) else { continue };
        let map = match maps.iter().find(|m| m.pt == pt) {
            Some(m) => m.clone(),
            None => match pt {
                0 => RtpMap::parse("0 PCMU/8000")?,
                8 => RtpMap::parse("8 PCMA/8000")?,
                _ => continue,
            },
        };
        let fmtp = media.fmtp(pt).map(str::to_string);
        if map.encoding.eq_ignore_ascii_case("telephone-event") {
            events.push(TelephoneEvent {
                pt,
                clock: map.clock,
                fmtp,
            });
            continue;
        }
        let known = [CodecName::Pcmu, CodecName::Pcma, CodecName::Opus]
            .into_iter()
            .find(|c| c.matches(&map));
        if let Some(name) = known {
            if !codecs.iter().any(|c: &Codec| c.name == name) {
                codecs.push(Codec {
                    name,
                    pt,
                    rtpmap: map,
                    fmtp,
                });
            }
        }
    }
    Ok((codecs, events))
}

/// What [`plain_offer`] needs besides the WebRTC offer.
#[derive(Debug, Clone)]
pub struct PlainOfferOptions<'a> {
    /// The gateway's RTP address toward the SIP side.
    pub addr: IpAddr,
    /// The gateway's RTP port (RTCP on port + 1).
    pub port: u16,
    /// The codecs the SIP side may get, in the gateway's order of preference.
    pub codecs: &'a [CodecName],
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version.
    pub session_version: u64,
}

/// The result of [`plain_offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainOffer {
    /// The plain-RTP offer to send to the SIP side.
    pub sdp: Sdp,
    /// The codecs offered, in order (payload types as in the WebRTC offer).
    pub codecs: Vec<Codec>,
    /// The telephone-events offered.
    pub telephone_events: Vec<TelephoneEvent>,
}

/// The first audio section that is not rejected (port 0 without `a=bundle-only`).
fn first_audio(sdp: &Sdp) -> Option<&Media> {
    sdp.media
        .iter()
        .find(|m| m.kind() == "audio" && (m.port() != 0 || m.has_attribute("bundle-only")))
}

/// Builds a plain-RTP (`RTP/AVP`) audio offer from a WebRTC offer: the codecs of
/// `opts.codecs` (in that order) that the WebRTC offer's first audio section has, with the
/// payload types and fmtp of the WebRTC offer (so no payload type rewriting is needed), plus
/// the telephone-events whose clock matches an offered codec (payload type and fmtp kept);
/// `c=` and `m=` on `opts.addr`/`opts.port`; `a=sendrecv`, `a=ptime:20`; no ICE, DTLS, mid,
/// rtcp-mux or other WebRTC attributes.
pub fn plain_offer(webrtc: &Sdp, opts: &PlainOfferOptions<'_>) -> Result<PlainOffer, Error> {
    let audio = first_audio(webrtc).ok_or(Error::NoAudio)?;
    let (have, events) = audio_codecs(audio)?;
    let codecs: Vec<Codec> = opts
        .codecs
        .iter()
        .filter_map(|want| have.iter().find(|c| c.name == *want).cloned())
        .collect();
    if codecs.is_empty() {
        return Err(Error::NoCommonCodec);
    }
    let events: Vec<TelephoneEvent> = events
        .into_iter()
        .filter(|e| codecs.iter().any(|c| c.name.clock() == e.clock))
        .collect();
    let ip = match opts.addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut fmts = String::new();
    for pt in codecs
        .iter()
        .map(|c| c.pt)
        .chain(events.iter().map(|e| e.pt))
    {
        fmts.push(' ');
        fmts.push_str(&pt.to_string());
    }
    let mut media = Media::new(format!("audio {} RTP/AVP{fmts}", opts.port));
    for c in &codecs {
        media
            .lines
            .push(Line::new('a', format!("rtpmap:{}", c.rtpmap)));
        if let Some(f) = &c.fmtp {
            media
                .lines
                .push(Line::new('a', format!("fmtp:{} {f}", c.pt)));
        }
    }
    for e in &events {
        media.lines.push(Line::new(
            'a',
            format!("rtpmap:{} telephone-event/{}", e.pt, e.clock),
        ));
        if let Some(f) = &e.fmtp {
            media
                .lines
                .push(Line::new('a', format!("fmtp:{} {f}", e.pt)));
        }
    }
    media.lines.push(Line::new('a', "ptime:20"));
    media.lines.push(Line::new('a', "sendrecv"));
    let sdp = Sdp {
        session: vec![
            Line::new('v', "0"),
            Line::new(
                'o',
                format!(
                    "- {} {} IN {ip} {}",
                    opts.session_id, opts.session_version, opts.addr
                ),
            ),
            Line::new('s', "-"),
            Line::new('c', format!("IN {ip} {}", opts.addr)),
            Line::new('t', "0 0"),
        ],
        media: vec![media],
    };
    Ok(PlainOffer {
        sdp,
        codecs,
        telephone_events: events,
    })
}

/// Builds a plain-RTP (`RTP/AVP`) audio answer for the SIP side: `codec` (and `event`, a
/// telephone-event at its clock) with their payload types, on `addr`/`port`, `a=ptime:20`,
/// `a=sendrecv`.
pub fn plain_answer(
    codec: &Codec,
    event: Option<&TelephoneEvent>,
    addr: IpAddr,
    port: u16,
    session_id: u64,
    session_version: u64,
) -> Sdp {
    let ip = match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut fmts = codec.pt.to_string();
    if let Some(e) = event {
        fmts.push(' ');
        fmts.push_str(&e.pt.to_string());
    }
    let mut media = Media::new(format!("audio {port} RTP/AVP {fmts}"));
    media
        .lines
        .push(Line::new('a', format!("rtpmap:{}", codec.rtpmap)));
    if let Some(f) = &codec.fmtp {
        media
            .lines
            .push(Line::new('a', format!("fmtp:{} {f}", codec.pt)));
    }
    if let Some(e) = event {
        media.lines.push(Line::new(
            'a',
            format!("rtpmap:{} telephone-event/{}", e.pt, e.clock),
        ));
        media.lines.push(Line::new(
            'a',
            format!("fmtp:{} {}", e.pt, e.fmtp.as_deref().unwrap_or("0-16")),
        ));
    }
    media.lines.push(Line::new('a', "ptime:20"));
    media.lines.push(Line::new('a', "sendrecv"));
    Sdp {
        session: vec![
            Line::new('v', "0"),
            Line::new(
                'o',
                format!("- {session_id} {session_version} IN {ip} {addr}"),
            ),
            Line::new('s', "-"),
            Line::new('c', format!("IN {ip} {addr}")),
            Line::new('t', "0 0"),
        ],
        media: vec![media],
    }
}

/// What [`read_plain_answer`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainAnswer {
    /// The codec chosen: the first known codec of the audio section's format list.
    pub codec: Codec,
    /// Every known codec of the section, in order (the first is `codec`).
    pub codecs: Vec<Codec>,
    /// Where to send RTP.
    pub addr: SocketAddr,
    /// The telephone-event with the chosen codec's clock, if any.
    pub telephone_event: Option<TelephoneEvent>,
    /// The direction (section, else session, else sendrecv).
    pub direction: Direction,
    /// `a=ptime`, if given.
    pub ptime: Option<u32>,
}

/// Reads a plain-RTP answer (or offer) from the SIP side: the first audio section with a
/// non-zero port and an RTP profile, its `c=` (section or session; must be an IP address),
/// and its first known codec. A rejected audio section (port 0) is [`Error::NoAudio`]; no
/// known codec is [`Error::NoCommonCodec`].
pub fn read_plain_answer(sdp: &Sdp) -> Result<PlainAnswer, Error> {
    read_plain_answer_among(sdp, &[CodecName::Pcmu, CodecName::Pcma, CodecName::Opus])
}

/// [`read_plain_answer`] where the codec used is the first of the answer's that is among
/// `offered` (an answerer may list codecs that were not offered, RFC 3264 §6.1 notwithstanding:
/// those are skipped).
pub fn read_plain_answer_among(sdp: &Sdp, offered: &[CodecName]) -> Result<PlainAnswer, Error> {
    let audio = sdp
        .media
        .iter()
        .find(|m| m.kind() == "audio" && m.port() != 0 && m.proto().starts_with("RTP/"))
        .ok_or(Error::NoAudio)?;
    let conn = sdp
        .media_connection(audio)?
        .ok_or(Error::BadSdp("missing c="))?;
    let ip = conn.ip.ok_or(Error::BadSdp("c= is not an IP address"))?;
    let (codecs, events) = audio_codecs(audio)?;
    let codecs: Vec<Codec> = codecs
        .into_iter()
        .filter(|c| offered.contains(&c.name))
        .collect();
    let codec = codecs.first().cloned().ok_or(Error::NoCommonCodec)?;
    let clock = codec.name.clock();
    let ptime = audio.attribute("ptime").and_then(|p| p.trim().parse().ok());
    Ok(PlainAnswer {
        telephone_event: events.into_iter().find(|e| e.clock == clock),
        codec,
        codecs,
        addr: SocketAddr::new(ip, audio.port()),
        direction: sdp.media_direction(audio),
        ptime,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_helpers() {
        let s = Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.4/127\r\nt=0 0\r\na=recvonly\r\nm=audio 49217 RTP/AVP 0 12\r\nx=unknown\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC/90000\r\n").unwrap();
        assert_eq!(s.media.len(), 2);
        assert_eq!(s.media[0].lines, vec![Line::new('x', "unknown")]);
        assert_eq!(
            s.connection().unwrap().unwrap().ip,
            Some("192.0.2.4".parse().unwrap())
        );
        assert_eq!(s.media_direction(&s.media[0]), Direction::RecvOnly);
        assert_eq!(s.media[1].rtpmaps().unwrap()[0].encoding, "LPC");
        assert_eq!(Sdp::parse(&s.to_bytes()).unwrap(), s);
        for bad in [
            &b""[..],
            b"o=x\r\n",
            b"v=1\r\n",
            b"v=0\r\nbad\r\n",
            b"v=0\r\nA=x\r\n",
            b"v=0\r\nm=audio\r\n",
            b"v=0\r\nm=audio x RTP/AVP 0\r\n",
            b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
            b"v=0\r\ns=\xff\r\n",
        ] {
            assert!(Sdp::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Connection::parse("IN IP4 2001:db8::1").is_err());
        assert!(Connection::parse("IN IP6 2001:db8::1").is_ok());
        assert!(RtpMap::parse("200 x/8000").is_err());
        assert!(RtpMap::parse("96 opus/48000/2/1").is_err());
    }

    #[test]
    fn plain_answer_for_the_sip_side() {
        let offer = Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n").unwrap();
        let (codecs, events) = audio_codecs(&offer.media[0]).unwrap();
        let a = plain_answer(
            &codecs[1],
            events.first(),
            "192.0.2.1".parse().unwrap(),
            30000,
            5,
            6,
        );
        let text = String::from_utf8(a.to_bytes()).unwrap();
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:0 PCMU/8000\r\n"), "{text}");
        assert!(text.contains("a=fmtp:101 0-15\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 192.0.2.1\r\n"), "{text}");
        let back = read_plain_answer(&Sdp::parse(&a.to_bytes()).unwrap()).unwrap();
        assert_eq!(back.codec.name, CodecName::Pcmu);
        assert_eq!(back.telephone_event.map(|e| e.pt), Some(101));
        assert_eq!(back.addr, "192.0.2.1:30000".parse().unwrap());
    }

    #[test]
    fn an_answer_codec_that_was_not_offered_is_skipped() {
        let a = Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n").unwrap();
        let r = read_plain_answer_among(&a, &[CodecName::Pcma]).unwrap();
        assert_eq!(r.codec.name, CodecName::Pcma);
        assert_eq!(r.codec.pt, 8);
        assert_eq!(r.telephone_event.map(|e| e.pt), Some(101));
        assert_eq!(
            read_plain_answer_among(&a, &[CodecName::Opus]),
            Err(Error::NoCommonCodec)
        );
        assert_eq!(read_plain_answer(&a).unwrap().codec.name, CodecName::Pcmu);
    }
}
