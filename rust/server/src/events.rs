//! Delivery of events to attached sessions.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use norgopolis_proto::v1::{server_message::Kind, Event, ServerMessage};
use tokio::sync::mpsc;
use tonic::Status;

/// Outgoing half of one session's Attach stream.
pub type SessionSender = mpsc::Sender<Result<ServerMessage, Status>>;

/// Every attached session's sender, by session id.
#[derive(Default)]
pub struct EventHub {
    sessions: Mutex<HashMap<u64, SessionSender>>,
    seq: AtomicU64,
}

impl EventHub {
    /// Adds a session.
    pub fn join(&self, id: u64, tx: SessionSender) {
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(id, tx);
        }
    }

    /// Removes a session.
    pub fn leave(&self, id: u64) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(&id);
        }
    }

    /// Sends an event to every session; returns how many took it. A session
    /// whose queue is full misses the event rather than stalling the others.
    pub fn publish(&self, module: &str, topic: &str, payload: Vec<u8>) -> u32 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let message = ServerMessage {
            kind: Some(Kind::Event(Event {
                module: module.into(),
                topic: topic.into(),
                payload,
                seq,
            })),
        };
        let senders: Vec<SessionSender> = match self.sessions.lock() {
            Ok(s) => s.values().cloned().collect(),
            Err(_) => return 0,
        };
        senders
            .iter()
            .filter(|tx| tx.try_send(Ok(message.clone())).is_ok())
            .count() as u32
    }
}
