//! A module's stdin/stdout as one duplex byte stream for HTTP/2.
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
}

/// The module's pipes, read from stdout and written to stdin.
pub struct ModuleIo {
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    close: CloseSignal,
}

impl ModuleIo {
    /// Joins the pipes; `close` ends the stream when raised.
    pub fn new(stdin: ChildStdin, stdout: ChildStdout, close: CloseSignal) -> Self {
        ModuleIo {
            stdin: Some(stdin),
            stdout,
            close,
        }
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
        if matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.close.0.stdout_eof.store(true, Ordering::Release);
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
        if self.closed(cx) {
            return Poll::Ready(Err(broken_pipe()));
        }
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(broken_pipe())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
