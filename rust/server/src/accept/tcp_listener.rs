//! The opt-in compatibility listener: TCP on a loopback address, for
//! clients built on the public `norgopolis-client` (host and port).
//!
//! TCP carries no peer credentials, so unlike the Unix socket it cannot
//! tell users apart: every local user can reach it. That is why it is off
//! by default, refuses any address outside loopback, and serves
//! `communication.Forwarder` only (no session, control or shutdown calls).
//! Nor can it be allowed to use up the server's descriptors: it accepts
//! only while the server has more than half of them free (see
//! [`FdBudget`]), and a connection over that is closed at once.

use std::net::SocketAddr;

use anyhow::Context;
use futures::Stream;
use tokio::net::{TcpListener, TcpStream};

use crate::{
    accept::admission::BurstLog,
    accept::fds::{self, FdBudget, SpareFd},
};

/// A bound compatibility listener.
pub struct TcpCompat {
    listener: TcpListener,
    /// The address actually bound (a port of 0 becomes a real port).
    pub local: SocketAddr,
}

impl TcpCompat {
    /// Binds `addr`, which `parse_loopback` (config) has already checked.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        // Checked again here: this is the last line before a socket exists.
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "refusing to listen on non-loopback address {addr}"
        );
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on tcp {addr}"))?;
        let local = listener.local_addr().context("tcp listener address")?;
        Ok(TcpCompat { listener, local })
    }

    /// Accepted connections within `budget`, with Nagle off (calls are
    /// small and latency-bound).
    pub fn incoming(
        self,
        budget: FdBudget,
    ) -> impl Stream<Item = crate::accept::connection::Accepted<TcpStream>> {
        let state = Accepting {
            listener: self.listener,
            budget,
            spare: SpareFd::new(),
            over_budget: BurstLog::default(),
            out_of_fds: BurstLog::default(),
        };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(stream) = state.accept().await {
                    // A TCP peer's process is unknown: never a module.
                    return Some(((stream, None), state));
                }
            }
        })
    }
}

/// The accepting end of the TCP listener.
struct Accepting {
    listener: TcpListener,
    budget: FdBudget,
    spare: SpareFd,
    over_budget: BurstLog,
    out_of_fds: BurstLog,
}

impl Accepting {
    /// The next connection to serve; `None` when one was accepted and
    /// closed (over budget) or accepting failed.
    async fn accept(&mut self) -> Option<TcpStream> {
        match self.listener.accept().await {
            Ok((stream, peer)) => {
                if !self.budget.tcp_may_accept() {
                    if self.over_budget.note().is_some() {
                        tracing::warn!(
                            "tcp: closing new connections: the server holds half its open-file                              limit ({}), the rest is kept for the owner's socket; this is                              logged once per burst",
                            self.budget.limit
                        );
                    }
                    return None;
                }
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                Some(stream)
            }
            Err(e) if fds::out_of_fds(&e) => {
                if self.out_of_fds.note().is_some() {
                    tracing::warn!("tcp accept: {e}; closing waiting connections unanswered");
                }
                // Make room with the spare to take the waiting connection
                // off the queue and close it: no spinning on a full queue.
                if self.spare.release() {
                    drop(self.listener.accept().await);
                    self.spare.restore();
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                None
            }
            Err(e) => {
                tracing::warn!("tcp accept failed: {e}");
                // Not a descriptor shortage: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                None
            }
        }
    }
}
