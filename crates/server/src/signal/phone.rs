//! A room member that is not a browser: the phone of a call the server dialed (the SIP
//! gateway's `dial`, `crate::sip::dial`). It joins the room like any client (the same hub, so
//! presence, limits, the admin view and metrics see it), receives what the hub queues for it,
//! and answers the `signal`s the browsers send it; the media itself is the SIP gateway's bridge.
//!
//! Also the way the gateway's `sip` messages reach it and go back to the dialer.

use std::sync::Arc;

use icebreaker_signal::{ClientMessage, ErrorCode, Join, ProtoError, Signal};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{now_unix, Attachment, End, Kind, Open, SignalService};

/// A `sip` message from a member, for the SIP gateway.
#[derive(Debug)]
pub struct SipInput {
    /// The member's room.
    pub room: String,
    /// The member's peer id.
    pub peer: String,
    /// The `data` object.
    pub data: Box<RawValue>,
    /// The `Host` the member used (candidate address of the media bridge).
    pub host: Option<String>,
}

/// What a phone member hears.
#[derive(Debug)]
pub enum Heard {
    /// A browser's `signal` (`data` as sent).
    Signal { from: String, data: String },
    /// A member left (its connection to the phone goes).
    Left(String),
    /// A member joined.
    Joined(String),
}

/// The phone's session in the room. Leaves when dropped.
pub struct PhoneMember {
    svc: Arc<SignalService>,
    att: Option<Attachment>,
    peer: String,
    room: String,
    sent: u64,
    /// Members (browsers) in the room besides the phone.
    others: Vec<String>,
}

impl std::fmt::Debug for PhoneMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneMember")
            .field("peer", &self.peer)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl SignalService {
    /// Where members' `sip` messages go (the SIP gateway).
    pub fn set_sip(&self, tx: mpsc::UnboundedSender<SipInput>) {
        self.inner.lock().sip = Some(tx);
    }

    /// Queues a `sip` message (`data`: a JSON object) for member `peer` of `room`.
    pub fn sip_push(&self, room: &str, peer: &str, data: &serde_json::Value) {
        let Ok(raw) = RawValue::from_string(data.to_string()) else {
            return;
        };
        let mut inner = self.inner.lock();
        inner.hub.push_sip(room, peer, raw);
        inner.wake();
    }

    /// Joins `room` as a phone (`name`, `meta`), with a room token of the server's own when
    /// tokens are required.
    pub async fn join_phone(
        self: &Arc<Self>,
        room: &str,
        name: &str,
        meta: &serde_json::Value,
        host: Option<String>,
    ) -> Result<PhoneMember, ProtoError> {
        let secret = self.inner.lock().hub.token_secret().map(<[u8]>::to_vec);
        let token = secret.map(|secret| {
            icebreaker_signal::token::sign(&secret, room, Some(name), now_unix() + 300, None)
        });
        let meta = RawValue::from_string(meta.to_string())
            .map_err(|_| ProtoError::new(ErrorCode::Internal, "bad phone meta"))?;
        let joined = self
            .join(
                Join {
                    room: room.to_owned(),
                    name: Some(name.chars().take(64).collect()),
                    meta: Some(meta),
                    capacity: None,
                    topology: None,
                    token,
                    id: None,
                },
                host,
                None,
            )
            .await?;
        let att = self
            .open(Open::Joined(joined.key), Kind::Phone, None)
            .await?;
        let mut member = PhoneMember {
            svc: self.clone(),
            sent: att.from_seq,
            att: Some(att),
            peer: joined.peer.clone(),
            room: room.to_owned(),
            others: Vec::new(),
        };
        // Who is there already: from the queued `joined`.
        let _ = member.poll();
        Ok(member)
    }
}

impl PhoneMember {
    /// Its peer id.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Its room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The other members.
    pub fn others(&self) -> &[String] {
        &self.others
    }

    /// Waits for what the room says to the phone. `Err`: its session is gone.
    pub async fn next(&mut self) -> Result<Vec<Heard>, ()> {
        loop {
            let heard = self.poll()?;
            if !heard.is_empty() {
                return Ok(heard);
            }
            let Some(att) = &self.att else { return Err(()) };
            let notify = att.notify.clone();
            let notified = notify.notified();
            // Anything that arrived between the poll and now.
            let heard = self.poll()?;
            if !heard.is_empty() {
                return Ok(heard);
            }
            notified.await;
        }
    }

    /// Takes what is queued (and acknowledges it: a phone has no resume).
    fn poll(&mut self) -> Result<Vec<Heard>, ()> {
        let Some(att) = &self.att else { return Err(()) };
        let batch = match self.svc.collect(att, self.sent) {
            Ok(b) => b,
            Err(End::Gone | End::Removed | End::Superseded | End::Lost) => return Err(()),
        };
        let mut heard = Vec::new();
        for (seq, text) in &batch.messages {
            self.sent = *seq;
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
                continue;
            };
            match v.get("type").and_then(|t| t.as_str()) {
                Some("joined") => {
                    if let Some(peers) = v.get("peers").and_then(|p| p.as_array()) {
                        for p in peers {
                            if let Some(id) = p.get("id").and_then(|i| i.as_str()) {
                                self.others.push(id.to_owned());
                            }
                        }
                    }
                }
                Some("peer-joined") => {
                    if let Some(id) = v.pointer("/peer/id").and_then(|i| i.as_str()) {
                        if !self.others.iter().any(|o| o == id) {
                            self.others.push(id.to_owned());
                        }
                        heard.push(Heard::Joined(id.to_owned()));
                    }
                }
                Some("peer-left") => {
                    if let Some(id) = v.get("peer").and_then(|i| i.as_str()) {
                        self.others.retain(|o| o != id);
                        heard.push(Heard::Left(id.to_owned()));
                    }
                }
                Some("signal") => {
                    if let (Some(from), Some(data)) =
                        (v.get("from").and_then(|f| f.as_str()), v.get("data"))
                    {
                        heard.push(Heard::Signal {
                            from: from.to_owned(),
                            data: data.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
        if !batch.messages.is_empty() {
            let key = att.key;
            let mut inner = self.svc.inner.lock();
            let _ = inner.hub.handle(
                std::time::Instant::now(),
                key,
                ClientMessage::Ack { seq: self.sent },
            );
            inner.wake();
        }
        Ok(heard)
    }

    /// Sends a `signal` to member `to`.
    pub async fn signal(&self, to: &str, data: &serde_json::Value) {
        let Some(att) = &self.att else { return };
        let Ok(raw) = RawValue::from_string(data.to_string()) else {
            return;
        };
        let _ = self
            .svc
            .handle(
                att.key,
                ClientMessage::Signal(Signal {
                    to: to.to_owned(),
                    data: raw,
                    id: None,
                }),
            )
            .await;
    }

    /// Leaves the room (the others see `peer-left`).
    pub async fn leave(mut self) {
        if let Some(att) = self.att.take() {
            let key = att.key;
            let _ = self
                .svc
                .handle(key, ClientMessage::Leave { id: None })
                .await;
            drop(att);
        }
    }
}
