//! One UDP port (and its ICE-TCP connections) for many WebRTC connections: the SFU's
//! participants and the SIP gateway's bridge legs share the way datagrams find their
//! connection. A STUN request is routed by the local ICE ufrag in its USERNAME (each connection
//! has its own); once its connection has accepted a datagram from a source, that source address
//! is remembered for it, and every later datagram from it is routed by address. Anything else
//! is not ours.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;

/// The routes of one shared port, to connections named `Id`.
#[derive(Debug)]
pub(crate) struct Demux<Id> {
    by_addr: HashMap<(Protocol, SocketAddr), Id>,
    by_ufrag: HashMap<String, Id>,
}

/// What a connection keeps for its routes.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Its local ufrag.
    pub ufrag: String,
    /// Addresses it has proven (oldest first).
    pub addrs: Vec<(Protocol, SocketAddr)>,
}

/// The local ufrag of a STUN request's USERNAME (`local:remote`).
pub(crate) fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let msg = icebreaker_stun::Message::parse(data).ok()?;
    let user = msg.username().ok()??;
    user.split(':').next()
}

/// The str0m input for a datagram to a connection whose candidates are `local`: the socket may
/// be bound to 0.0.0.0 or sit behind a NAT, so the datagram was addressed to our candidate of
/// its protocol. `None`: too large for a datagram.
pub(crate) fn receive_input<'a>(
    now: Instant,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    local: &[(Protocol, SocketAddr)],
    data: &'a [u8],
) -> Option<Input<'a>> {
    let destination = local
        .iter()
        .find(|(p, _)| *p == proto)
        .map_or(destination, |(_, a)| *a);
    let contents = data.try_into().ok()?;
    Some(Input::Receive(
        now,
        Receive {
            proto,
            source,
            destination,
            contents,
        },
    ))
}

impl<Id: Copy + Eq + Hash> Demux<Id> {
    pub(crate) fn new() -> Self {
        Demux {
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
        }
    }

    /// The connection a datagram from `source` is for, and whether `source` is already known.
    pub(crate) fn route(
        &self,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) -> Option<(Id, bool)> {
        if let Some(id) = self.by_addr.get(&(proto, source)) {
            return Some((*id, true));
        }
        let id = stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u))?;
        Some((*id, false))
    }

    /// `source` proved itself for `id` (its connection accepted the datagram): routed by
    /// address from now on. A connection keeps `cap` addresses at most (oldest forgotten).
    pub(crate) fn learn(
        &mut self,
        id: Id,
        routes: &mut Routes,
        proto: Protocol,
        source: SocketAddr,
        cap: usize,
    ) {
        if routes.addrs.len() >= cap && !routes.addrs.is_empty() {
            let old = routes.addrs.remove(0);
            if self.by_addr.get(&old) == Some(&id) {
                self.by_addr.remove(&old);
            }
        }
        routes.addrs.push((proto, source));
        self.by_addr.insert((proto, source), id);
    }

    /// `id`'s local ufrag is now `ufrag` (a new connection, or an ICE restart).
    pub(crate) fn set_ufrag(&mut self, id: Id, routes: &mut Routes, ufrag: String) {
        if routes.ufrag == ufrag && self.by_ufrag.get(&ufrag) == Some(&id) {
            return;
        }
        if self.by_ufrag.get(&routes.ufrag) == Some(&id) {
            self.by_ufrag.remove(&routes.ufrag);
        }
        self.by_ufrag.insert(ufrag.clone(), id);
        routes.ufrag = ufrag;
    }

    /// `id` is gone: none of its routes remain.
    pub(crate) fn forget(&mut self, id: Id, routes: &Routes) {
        if self.by_ufrag.get(&routes.ufrag) == Some(&id) {
            self.by_ufrag.remove(&routes.ufrag);
        }
        for a in &routes.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
    }

    /// Routes held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn binding(user: &str) -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7u8; 12]);
        let pad = (4 - user.len() % 4) % 4;
        m.extend_from_slice(&[0x00, 0x06]);
        m.extend_from_slice(&(user.len() as u16).to_be_bytes());
        m.extend_from_slice(user.as_bytes());
        m.extend(std::iter::repeat_n(0, pad));
        let len = (m.len() - 20) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }

    #[test]
    fn routes_by_ufrag_then_by_proven_address() {
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        let mut d = Demux::new();
        let mut r = Routes::default();
        d.set_ufrag(1u32, &mut r, "abcd".into());
        assert_eq!(
            d.route(Protocol::Udp, a, &binding("abcd:zz")),
            Some((1, false))
        );
        assert_eq!(d.route(Protocol::Udp, a, &binding("nope:zz")), None);
        assert_eq!(
            d.route(Protocol::Udp, a, b"\x80rtp"),
            None,
            "unproven source"
        );
        d.learn(1, &mut r, Protocol::Udp, a, 2);
        assert_eq!(d.route(Protocol::Udp, a, b"\x80rtp"), Some((1, true)));
        assert_eq!(d.route(Protocol::Tcp, a, b"\x80rtp"), None, "per protocol");
        // A cap of 2: the oldest is forgotten.
        d.learn(1, &mut r, Protocol::Udp, b, 2);
        d.learn(1, &mut r, Protocol::Tcp, b, 2);
        assert_eq!(d.route(Protocol::Udp, a, b"x"), None);
        // ICE restart: the new ufrag routes, the old does not.
        d.set_ufrag(1, &mut r, "efgh".into());
        assert_eq!(d.route(Protocol::Udp, a, &binding("abcd:zz")), None);
        assert_eq!(
            d.route(Protocol::Udp, a, &binding("efgh:zz")),
            Some((1, false))
        );
        d.forget(1, &r);
        assert_eq!(d.len(), (0, 0));
    }
}
