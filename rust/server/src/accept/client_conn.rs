//! One client connection as the services see it: its id, its peer, its
//! count of calls in flight, and the counts of open connections for
//! `Status`. Both the gRPC and the lean front door take their calls'
//! limits from here.

use std::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc,
};

use crate::accept::admission::Setup;

/// Counts of open connections, for `Status`.
#[derive(Default)]
pub struct Connections {
    open: AtomicU32,
    next_id: AtomicU64,
}

impl Connections {
    /// Connections currently open (past the preface).
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn opened(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }

    /// A connection id unique for the server's life.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One client connection; present in every request's extensions.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Unique for the server's life.
    pub id: u64,
    /// The peer's process id, from the socket's credentials (Unix sockets
    /// only): how the forwarder recognises calls made by a module.
    pub peer_pid: Option<u32>,
    /// Whether the peer is one of our modules, judged on its first call.
    from_module: Arc<std::sync::OnceLock<bool>>,
    calls: Arc<AtomicU32>,
    /// Whether a call or session has started here (see [`Admission`]).
    setup: Arc<Setup>,
}

/// A call counted against its connection; dropping it ends the count.
pub struct ConnCall(Arc<AtomicU32>);

impl Drop for ConnCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// A new connection's state; `setup` is its admission record.
    pub fn new(id: u64, peer_pid: Option<u32>, setup: Arc<Setup>) -> Self {
        Conn {
            id,
            peer_pid,
            from_module: Arc::default(),
            calls: Arc::default(),
            setup,
        }
    }

    /// Whether this connection comes from one of our module processes;
    /// `is_module` is asked once per connection (a peer never changes).
    pub fn is_from_module(&self, is_module: impl FnOnce(u32) -> bool) -> bool {
        *self
            .from_module
            .get_or_init(|| self.peer_pid.is_some_and(is_module))
    }

    /// Notes that the connection is in use though it starts no call (an
    /// external module's): it is no longer closed as idle.
    pub fn mark_started(&self) {
        self.setup.mark_started();
    }

    /// Counts a call unless `limit` calls are already running here.
    pub fn begin_call(&self, limit: u32) -> Option<ConnCall> {
        // Lean connections start calls only through here.
        self.setup.mark_started();
        self.calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnCall(self.calls.clone()))
    }
}

/// Decrements the open count when a connection ends.
pub struct OpenGuard(Arc<Connections>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_limit_per_connection() {
        let conn = Conn {
            id: 1,
            peer_pid: None,
            from_module: Arc::default(),
            calls: Arc::default(),
            setup: Arc::default(),
        };
        let a = conn.begin_call(2).unwrap();
        let _b = conn.begin_call(2).unwrap();
        assert!(conn.begin_call(2).is_none());
        drop(a);
        assert!(conn.begin_call(2).is_some());
    }
}
