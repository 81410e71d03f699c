//! Operating a running server: drain and reload, from a signal or from the admin endpoints.
//!
//! - **Drain** (SIGTERM or `POST /admin/drain`): new TURN allocations are refused (300 Try
//!   Alternate with `alternate_server`, 508 without), new signaling joins get `draining`,
//!   `/readyz` answers 503; everything that exists keeps running. The process exits when the last
//!   allocation and the last connected signaling session have ended, or after `drain_timeout`.
//! - **Reload** (SIGHUP or `POST /admin/reload`): the configuration is read again (file,
//!   certificate files); credentials, secrets, limits, the peer policy and the certificate change
//!   without dropping an allocation or a session. Listen addresses, relay ports and workers
//!   need a restart (a reload that changes them says so and keeps the old ones).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::gate::Gate;
use crate::metrics::Metrics;

/// What a reload did: the settings that changed and the ones that need a restart.
pub type ReloadResult = Result<Vec<String>, String>;

/// Shared by the HTTP admin endpoints and the signal handlers of `serve`.
#[derive(Debug)]
pub struct Control {
    gate: Arc<Gate>,
    group: Arc<icebreaker_turn::Group>,
    metrics: Arc<Metrics>,
    /// `Some(deadline)` once draining.
    drain: watch::Sender<Option<Instant>>,
    drain_timeout: RwLock<Duration>,
    reload: mpsc::UnboundedSender<oneshot::Sender<ReloadResult>>,
    admin_token: RwLock<Option<String>>,
    /// When the server started (uptime in `/admin/status`).
    started: Instant,
}

impl Control {
    pub fn new(
        gate: Arc<Gate>,
        group: Arc<icebreaker_turn::Group>,
        metrics: Arc<Metrics>,
        drain_timeout: Duration,
        admin_token: Option<String>,
    ) -> (
        Arc<Self>,
        mpsc::UnboundedReceiver<oneshot::Sender<ReloadResult>>,
    ) {
        let (reload, rx) = mpsc::unbounded_channel();
        let (drain, _) = watch::channel(None);
        (
            Arc::new(Control {
                gate,
                group,
                metrics,
                drain,
                drain_timeout: RwLock::new(drain_timeout),
                reload,
                admin_token: RwLock::new(admin_token),
                started: Instant::now(),
            }),
            rx,
        )
    }

    /// When the server started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Start draining (again: no effect). Returns the deadline.
    pub fn drain(&self) -> Instant {
        let timeout = *self.drain_timeout.read();
        let mut deadline = Instant::now() + timeout;
        self.drain.send_if_modified(|d| match d {
            Some(at) => {
                deadline = *at;
                false
            }
            None => {
                *d = Some(deadline);
                true
            }
        });
        self.gate.set_draining(true);
        self.group.set_draining(true);
        self.metrics.draining.set(1);
        deadline
    }

    /// The drain deadline, once draining.
    pub fn draining(&self) -> Option<Instant> {
        *self.drain.borrow()
    }

    /// Ask the serve loop to reload; the answer says what changed.
    pub async fn reload(&self) -> ReloadResult {
        let (tx, rx) = oneshot::channel();
        self.reload
            .send(tx)
            .map_err(|_| "the server is stopping".to_string())?;
        rx.await.map_err(|_| "the server is stopping".to_string())?
    }

    /// Allocations alive on every shard.
    pub fn allocations(&self) -> usize {
        self.group.allocations()
    }

    pub fn set_drain_timeout(&self, d: Duration) {
        *self.drain_timeout.write() = d;
    }

    pub fn set_admin_token(&self, token: Option<String>) {
        *self.admin_token.write() = token;
    }

    /// Whether `presented` (a bearer token, if any) opens the admin endpoints. Without a
    /// configured token, nothing does (the caller then only lets loopback clients in).
    pub fn admin_token_ok(&self, presented: Option<&str>) -> Option<bool> {
        let want = self.admin_token.read();
        let want = want.as_deref()?;
        let ok = presented.is_some_and(|p| {
            bool::from(subtle::ConstantTimeEq::ct_eq(p.as_bytes(), want.as_bytes()))
        });
        Some(ok)
    }
}
