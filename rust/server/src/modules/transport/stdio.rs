//! A module's stdin/stdout as one duplex byte stream for HTTP/2, and the
//! close signal both transports end a module's connection with.
//!
//! Closing stdin is how we ask a module to stop, but the HTTP/2 connection
//! owns the stream; so the stream carries a [`CloseSignal`] that, once
//! raised, drops stdin and reports EOF, ending the connection from our side.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    process::{ChildStdin, ChildStdout},
};

/// Raised to close a module's stdin from outside the connection.
#[derive(Default, Clone)]
pub struct CloseSignal(Arc<CloseInner>);

#[derive(Default)]
struct CloseInner {
    raised: AtomicBool,
    waker: AtomicWaker,
    /// Wakes tasks in [`CloseSignal::raised`] (the lean transport's).
    notify: tokio::sync::Notify,
    /// The module closed its stdout (EOF seen), as opposed to us closing.
    stdout_eof: AtomicBool,
    /// What the module's first bytes on stdout were (see [`Greeting`]).
    greeting: std::sync::Mutex<Greeting>,
    /// Wakes tasks in [`CloseSignal::greeted`].
    greeted: tokio::sync::Notify,
    /// The greeting was judged: reads no longer look at it (no lock on
    /// the data path).
    judged: AtomicBool,
}

/// Length of an HTTP/2 frame header: what tells a module's greeting apart.
const FRAME_HEADER: usize = 9;

/// An HTTP/2 server greets with a SETTINGS frame (type 4, flags without
/// ACK); anything else on stdout first means the module does not speak
/// the protocol (or a stray print broke it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// Fewer than a frame header's bytes so far.
    Pending([u8; FRAME_HEADER], usize),
    /// The first frame is SETTINGS.
    Http2,
    /// The first bytes are not an HTTP/2 SETTINGS frame.
    Other,
}

impl Default for Greeting {
    fn default() -> Self {
        Greeting::Pending([0; FRAME_HEADER], 0)
    }
}

impl Greeting {
    /// Takes in the next bytes read from stdout; true once judged.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let Greeting::Pending(mut head, len) = *self else {
            return false;
        };
        let n = bytes.len().min(FRAME_HEADER - len);
        head[len..len + n].copy_from_slice(&bytes[..n]);
        *self = if len + n < FRAME_HEADER {
            Greeting::Pending(head, len + n)
        } else if head[3] == 0x4 && head[4] & 0x1 == 0 {
            Greeting::Http2
        } else {
            Greeting::Other
        };
        !matches!(self, Greeting::Pending(..))
    }
}

impl CloseSignal {
    /// Closes the module's stdin (at the connection's next poll, woken now).
    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::Release);
        self.0.waker.wake();
        self.0.notify.notify_waiters();
    }

    /// Resolves once the close is raised.
    pub async fn raised(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before checking, so a raise in between is not lost.
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }

    /// Whether we asked for the close.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Whether the module closed its stdout by itself.
    pub fn stdout_closed(&self) -> bool {
        self.0.stdout_eof.load(Ordering::Acquire)
    }

    /// Resolves once the module's first bytes on stdout were judged: true
    /// for an HTTP/2 greeting. The connection must be polled meanwhile.
    pub async fn greeted(&self) -> bool {
        loop {
            let notified = self.0.greeted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match *self.lock_greeting() {
                Greeting::Http2 => return true,
                Greeting::Other => return false,
                Greeting::Pending(..) => {}
            }
            notified.await;
        }
    }

    /// Whether the module's first bytes were an HTTP/2 greeting, as of now.
    pub fn has_greeted(&self) -> bool {
        matches!(*self.lock_greeting(), Greeting::Http2)
    }

    fn lock_greeting(&self) -> std::sync::MutexGuard<'_, Greeting> {
        // A plain value: a poisoned lock is still consistent.
        self.0.greeting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn saw(&self, bytes: &[u8]) {
        if self.0.judged.load(Ordering::Acquire) {
            return;
        }
        if self.lock_greeting().feed(bytes) {
            self.0.judged.store(true, Ordering::Release);
            self.0.greeted.notify_waiters();
        }
    }
}

/// The module's pipes, read from stdout and written to stdin.
///
/// Writes are held until a flush, and a flush with something held lets
/// the runtime's ready tasks run once first: hyper sends a request's
/// HEADERS from its connection task and its DATA from the task that pipes
/// the body, two writes and two wake-ups of the module for one call. Held
/// back one turn, both leave in one write (as the public server sends
/// them).
pub struct ModuleIo {
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    close: CloseSignal,
    held: Vec<u8>,
    /// Bytes of `held` already written.
    sent: usize,
    /// The flush of what is held has let the other tasks run once.
    waited: bool,
}

/// Above this many held bytes, writes go out without waiting for a flush,
/// so a large argument is never held whole.
const HOLD_AT_MOST: usize = 128 * 1024;

impl ModuleIo {
    /// Joins the pipes; `close` ends the stream when raised.
    pub fn new(stdin: ChildStdin, stdout: ChildStdout, close: CloseSignal) -> Self {
        ModuleIo {
            stdin: Some(stdin),
            stdout,
            close,
            held: Vec::new(),
            sent: 0,
            waited: false,
        }
    }

    /// Writes out everything held.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.held.len() {
            let Some(stdin) = self.stdin.as_mut() else {
                return Poll::Ready(Err(broken_pipe()));
            };
            let n = std::task::ready!(Pin::new(stdin).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.close.0.waker.register(cx.waker());
        if self.close.is_raised() {
            self.stdin = None;
            return true;
        }
        false
    }
}

fn broken_pipe() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "module stdin closed")
}

impl AsyncRead for ModuleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closed(cx) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stdout).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) {
            let read = &buf.filled()[before..];
            if read.is_empty() && buf.remaining() > 0 {
                self.close.0.stdout_eof.store(true, Ordering::Release);
            } else if !read.is_empty() {
                self.close.saw(read);
            }
        }
        polled
    }
}

impl AsyncWrite for ModuleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closed(cx) || self.stdin.is_none() {
            return Poll::Ready(Err(broken_pipe()));
        }
        if self.held.len() >= HOLD_AT_MOST {
            std::task::ready!(self.poll_send_held(cx))?;
        }
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.held.len() > self.sent {
            if !self.waited {
                // Behind the tasks already queued (the body's among them).
                self.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            std::task::ready!(self.poll_send_held(cx))?;
        }
        self.waited = false;
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.stdin.is_some() {
            // What is held still goes; a module gone meanwhile is no error.
            let _ = std::task::ready!(self.poll_send_held(cx));
        }
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_are_judged_on_the_first_frame_header() {
        // SETTINGS, no flags, empty: what every HTTP/2 server sends first.
        let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        let mut g = Greeting::default();
        assert!(!g.feed(&settings[..4]));
        assert!(g.feed(&settings[4..]));
        assert_eq!(g, Greeting::Http2);
        let mut g = Greeting::default();
        assert!(g.feed(b"hello from a stray println\n"));
        assert_eq!(g, Greeting::Other);
        // A SETTINGS ACK is not a greeting.
        let mut g = Greeting::default();
        assert!(g.feed(&[0, 0, 0, 4, 1, 0, 0, 0, 0]));
        assert_eq!(g, Greeting::Other);
    }
}
