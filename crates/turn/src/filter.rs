//! Which peers a client may relay to.
//!
//! A TURN server that relays into loopback or private ranges lets anyone with credentials reach the
//! operator's internal network. The default is therefore to refuse loopback, private (RFC 1918, ULA),
//! link-local, multicast, unspecified, CGNAT and reserved addresses, in every spelling (IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 forms), and the server's own service ports, unless an allow rule
//! covers them. The one exception that matters in practice: the server's own relay range. When both
//! callers use this server, each one's peer is the other's relay address here, and that must work.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

/// Why a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// An explicit `--deny-peer` rule matched.
    DenyRule,
    /// One of the server's own service ports (TURN listener, HTTP, ...).
    OwnService,
    /// A special-purpose range refused by default (loopback, private, ...).
    SpecialRange,
    /// One of the server's own addresses, outside the relay port range.
    OwnAddress,
}

/// The peer filter. Built once from the configuration; checked on CreatePermission, ChannelBind and
/// every Send indication.
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    /// The server's own addresses (listening, relay, external). Loopback addresses are always own.
    own_ips: Vec<IpAddr>,
    /// Ports of the server's own services, refused on every own address even when an allow rule
    /// covers the address.
    service_ports: Vec<u16>,
    relay_ips: Vec<IpAddr>,
    relay_ports: Option<RangeInclusive<u16>>,
    /// The server's public media ports (the SFU): reachable through a relay like a relay
    /// address is, since clients behind strict NATs reach the SFU through this server's TURN.
    media: Vec<SocketAddr>,
}

impl PeerFilter {
    /// A filter with the default denials and no exceptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow a range that the defaults refuse (e.g. `127.0.0.0/8` in a test bed).
    pub fn allow(mut self, net: IpNet) -> Self {
        self.allow.push(normalize_net(net));
        self
    }

    /// Refuse a range in addition to the defaults. Deny rules win over allow rules.
    pub fn deny(mut self, net: IpNet) -> Self {
        self.deny.push(normalize_net(net));
        self
    }

    /// Record a public media address of this server (the SFU's port; an unspecified IP means
    /// that port on every own address). Relaying to it is allowed.
    pub fn media(mut self, addr: SocketAddr) -> Self {
        let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        if !self.media.contains(&addr) {
            self.media.push(addr);
        }
        self
    }

    /// Record one of the server's own addresses.
    pub fn own_ip(mut self, ip: IpAddr) -> Self {
        let ip = canonical(ip);
        if !ip.is_unspecified() && !self.own_ips.contains(&ip) {
            self.own_ips.push(ip);
        }
        self
    }

    /// Record the port of one of the server's own services (TURN, TURNS, HTTP...).
    pub fn service_port(mut self, port: u16) -> Self {
        if port != 0 && !self.service_ports.contains(&port) {
            self.service_ports.push(port);
        }
        self
    }

    /// The relay addresses: relaying to `ip:port` with a port in `ports` is allowed for these IPs.
    pub fn relay(mut self, ips: &[IpAddr], ports: RangeInclusive<u16>) -> Self {
        for ip in ips {
            let ip = canonical(*ip);
            if !self.relay_ips.contains(&ip) {
                self.relay_ips.push(ip);
            }
            self = self.own_ip(ip);
        }
        self.relay_ports = Some(ports);
        self
    }

    /// Whether `port` on one of our relay IPs is in the relay range.
    pub fn is_relay_addr(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.relay_ports
            .as_ref()
            .is_some_and(|r| r.contains(&addr.port()))
            && self.relay_ips.contains(&ip)
    }

    fn is_own(&self, ip: IpAddr) -> bool {
        // 0.0.0.0 and :: as a destination reach this host.
        ip.is_loopback() || ip.is_unspecified() || self.own_ips.contains(&ip)
    }

    /// Check a peer transport address. `is_live_relay` tells whether an address in the relay
    /// range is the relay address of a live allocation on this server: only those are reachable
    /// through the relay-range exception (any other socket that happens to sit on a relay-range
    /// port of a relay IP, such as a local process's ephemeral port, is not).
    pub fn check(
        &self,
        peer: SocketAddr,
        is_live_relay: impl Fn(SocketAddr) -> bool,
    ) -> Result<(), Denied> {
        let ip = canonical(peer.ip());
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Err(Denied::DenyRule);
        }
        let own = self.is_own(ip);
        if own && self.service_ports.contains(&peer.port()) {
            return Err(Denied::OwnService);
        }
        if self
            .media
            .iter()
            .any(|m| m.port() == peer.port() && (m.ip() == ip || (own && m.ip().is_unspecified())))
        {
            return Ok(());
        }
        if self.relay_ips.contains(&ip)
            && self
                .relay_ports
                .as_ref()
                .is_some_and(|r| r.contains(&peer.port()))
            && is_live_relay(SocketAddr::new(ip, peer.port()))
        {
            return Ok(());
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if is_special(ip) {
            return Err(Denied::SpecialRange);
        }
        if own {
            return Err(Denied::OwnAddress);
        }
        Ok(())
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) => match n.addr().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => {
                ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).map_or(net, IpNet::V4)
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    }
}

/// The canonical form of an address for filtering: IPv4 embedded in IPv6 (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) becomes the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let o = v6.octets();
    // IPv4-compatible (deprecated) ::a.b.c.d, but not :: and ::1.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 6to4 2002:V4ADDR::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Special-purpose addresses refused by default.
pub fn is_special(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_unspecified()
                || o[0] == 0 // 0.0.0.0/8 "this network"
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240 // 240.0.0.0/4 reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xFE00) == 0xFC00 // fc00::/7 unique local
                || (s[0] & 0xFFC0) == 0xFE80 // fe80::/10 link-local
                || (s[0] & 0xFFC0) == 0xFEC0 // fec0::/10 site-local (deprecated)
                || s[..4] == [0x100, 0, 0, 0] // 100::/64 discard-only
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn defaults_refuse_internal_ranges_in_every_spelling() {
        let f = PeerFilter::new();
        for bad in [
            "127.0.0.1:80",
            "10.1.2.3:5000",
            "172.16.0.1:1",
            "192.168.1.1:53",
            "169.254.169.254:80",
            "100.64.0.1:1",
            "0.0.0.0:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "[::1]:80",
            "[::]:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[ff02::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:10.0.0.1]:80",
            "[::127.0.0.1]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[2002:c0a8:0101::1]:80",
        ] {
            assert!(f.check(sa(bad), |_| true).is_err(), "{bad} must be refused");
        }
        for good in ["8.8.8.8:53", "[2001:4860:4860::8888]:53", "203.0.113.5:9"] {
            assert_eq!(
                f.check(sa(good), |_| true),
                Ok(()),
                "{good} must be allowed"
            );
        }
    }

    #[test]
    fn allow_and_deny_rules() {
        let f = PeerFilter::new()
            .allow("127.0.0.0/8".parse().expect("net"))
            .deny("127.0.0.9/32".parse().expect("net"))
            .deny("8.8.0.0/16".parse().expect("net"));
        assert_eq!(f.check(sa("127.0.0.1:4000"), |_| true), Ok(()));
        assert_eq!(f.check(sa("[::ffff:127.0.0.1]:4000"), |_| true), Ok(()));
        assert_eq!(
            f.check(sa("127.0.0.9:4000"), |_| true),
            Err(Denied::DenyRule)
        );
        assert_eq!(f.check(sa("8.8.8.8:53"), |_| true), Err(Denied::DenyRule));
        assert_eq!(
            f.check(sa("[::ffff:8.8.8.8]:53"), |_| true),
            Err(Denied::DenyRule)
        );
    }

    #[test]
    fn own_relay_range_allowed_own_services_refused() {
        let relay: IpAddr = "127.0.0.1".parse().expect("ip");
        let f = PeerFilter::new()
            .relay(&[relay], 50000..=50100)
            .service_port(3478)
            .service_port(8080);
        assert_eq!(f.check(sa("127.0.0.1:50050"), |_| true), Ok(()));
        // A relay-range port with no allocation behind it is just a loopback port.
        assert_eq!(
            f.check(sa("127.0.0.1:50050"), |_| false),
            Err(Denied::SpecialRange)
        );
        assert_eq!(
            f.check(sa("127.0.0.1:8080"), |_| true),
            Err(Denied::OwnService)
        );
        assert_eq!(
            f.check(sa("127.0.0.1:22"), |_| true),
            Err(Denied::SpecialRange)
        );
        // Even an allow rule does not open the server's own service ports.
        let f = f.allow("127.0.0.0/8".parse().expect("net"));
        assert_eq!(
            f.check(sa("127.0.0.1:3478"), |_| true),
            Err(Denied::OwnService)
        );
        assert_eq!(f.check(sa("127.0.0.1:22"), |_| true), Ok(()));
    }

    #[test]
    fn unspecified_address_reaches_our_services_even_with_an_allow_everything_rule() {
        let f = PeerFilter::new()
            .allow("0.0.0.0/0".parse().expect("net"))
            .allow("::/0".parse().expect("net"))
            .service_port(3478);
        for s in ["0.0.0.0:3478", "[::]:3478", "[::ffff:0.0.0.0]:3478"] {
            let a: SocketAddr = s.parse().expect("addr");
            assert_eq!(f.check(a, |_| false), Err(Denied::OwnService), "{s}");
        }
    }

    #[test]
    fn media_port_allowed_other_ports_not() {
        let f = PeerFilter::new()
            .service_port(3478)
            .media(sa("0.0.0.0:3479"));
        let ok = |s: &str| f.check(sa(s), |_| false);
        assert_eq!(ok("127.0.0.1:3479"), Ok(()), "the SFU on loopback");
        assert_eq!(ok("127.0.0.1:3478"), Err(Denied::OwnService));
        assert_eq!(ok("127.0.0.1:3480"), Err(Denied::SpecialRange));
        assert_eq!(ok("10.0.0.1:3479"), Err(Denied::SpecialRange), "not ours");
        let g = PeerFilter::new().media(sa("10.0.0.5:3479"));
        assert_eq!(g.check(sa("10.0.0.5:3479"), |_| false), Ok(()));
        assert_eq!(
            g.check(sa("10.0.0.5:3480"), |_| false),
            Err(Denied::SpecialRange)
        );
    }

    #[test]
    fn own_public_address_outside_relay_range_refused() {
        let pub_ip: IpAddr = "203.0.113.7".parse().expect("ip");
        let f = PeerFilter::new()
            .own_ip(pub_ip)
            .relay(&[pub_ip], 50000..=50100)
            .service_port(443);
        assert_eq!(f.check(sa("203.0.113.7:50001"), |_| true), Ok(()));
        assert_eq!(
            f.check(sa("203.0.113.7:22"), |_| true),
            Err(Denied::OwnAddress)
        );
        assert_eq!(
            f.check(sa("203.0.113.7:443"), |_| true),
            Err(Denied::OwnService)
        );
    }
}
