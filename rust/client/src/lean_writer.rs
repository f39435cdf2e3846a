//! Writing lean frames to the server straight from the thread that sends
//! them.
//!
//! A call's first frame then leaves from the caller's own thread (for the
//! Neovim plugin, its main thread) instead of waking a writer task first:
//! on a machine whose idle cores take tens of microseconds to wake, that
//! wake-up was a good part of a call's time. Only when the socket is full
//! does a frame wait, in a backlog that a flusher task writes out as the
//! socket drains; frames sent meanwhile queue behind it, so order is kept.

use std::{
    io::{self, Write},
    os::unix::net::UnixStream,
    sync::{Arc, Mutex, MutexGuard},
};

use norgopolis_proto::{
    lean_caller::FrameSink,
    lean_frame::{self, Frame},
};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::Notify,
    task::JoinHandle,
};

/// Backlog capacity kept once written out.
const KEEP_CAPACITY: usize = 1 << 20;

struct State {
    /// Bytes not yet written, oldest first.
    backlog: Vec<u8>,
    /// Writing failed: the connection is gone.
    broken: bool,
}

struct Shared {
    socket: AsyncFd<UnixStream>,
    state: Mutex<State>,
    /// Raised when the backlog has bytes for the flusher.
    pending: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain buffer operations cannot leave it inconsistent on a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what the backlog holds until done or the socket is full.
    fn write_backlog(&self, state: &mut State) -> io::Result<()> {
        while !state.backlog.is_empty() {
            match self.socket.get_ref().write(&state.backlog) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    state.backlog.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        // One big argument should not keep its buffer for the connection's life.
        if state.backlog.capacity() > KEEP_CAPACITY {
            state.backlog = Vec::new();
        }
        Ok(())
    }
}

/// The sending side of a lean connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct DirectWriter {
    shared: Arc<Shared>,
}

impl DirectWriter {
    /// Writes to `socket` (made non-blocking), with a flusher task for
    /// what does not fit at once. Must run inside the runtime.
    pub(crate) fn start(socket: UnixStream) -> io::Result<(DirectWriter, JoinHandle<()>)> {
        socket.set_nonblocking(true)?;
        // SAFETY: a UnixStream owns its descriptor and keeps it open, the
        // same one, until it is dropped, which the AsyncFd does.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        let shared = Arc::new(Shared {
            socket,
            state: Mutex::new(State {
                backlog: Vec::new(),
                broken: false,
            }),
            pending: Notify::new(),
        });
        let flusher = tokio::spawn(flush(shared.clone()));
        Ok((DirectWriter { shared }, flusher))
    }
}

impl DirectWriter {
    /// Shuts the socket down both ways: the server sees the connection
    /// end, and nothing more is sent.
    pub(crate) fn shutdown(&self) {
        self.shared.state().broken = true;
        let _ = self
            .shared
            .socket
            .get_ref()
            .shutdown(std::net::Shutdown::Both);
    }
}

impl FrameSink for DirectWriter {
    fn send_frame(&self, frame: Frame) -> bool {
        let mut state = self.shared.state();
        if state.broken {
            return false;
        }
        let waiting = !state.backlog.is_empty();
        if let Err(e) = lean_frame::encode(&frame, &mut state.backlog) {
            tracing::warn!("cannot send a frame to the server: {e}");
            return false;
        }
        if waiting {
            // The flusher is on it; this frame goes after what it has.
            return true;
        }
        match self.shared.write_backlog(&mut state) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.shared.pending.notify_one();
                true
            }
            Err(e) => {
                tracing::debug!("lean connection to the server: writing failed: {e}");
                state.broken = true;
                false
            }
        }
    }
}

/// Writes the backlog out whenever there is one, as the socket drains.
async fn flush(shared: Arc<Shared>) {
    loop {
        shared.pending.notified().await;
        loop {
            let mut ready = match shared.socket.writable().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::debug!("lean connection to the server: {e}");
                    shared.state().broken = true;
                    return;
                }
            };
            let mut state = shared.state();
            match shared.write_backlog(&mut state) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(e) => {
                    tracing::debug!("lean connection to the server: writing failed: {e}");
                    state.broken = true;
                    return;
                }
            }
        }
    }
}
