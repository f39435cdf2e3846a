//! Knowing when the HTTP/2 connection has written what it was given.
//!
//! [`crate::Emitter::flush`] needs "every frame queued so far is in the
//! pipe" (a module that is about to exit must not lose its last items), and
//! hyper does not expose that. What we can observe is the connection task's
//! I/O through [`ProbedIo`]: h2 drives the connection in passes, each
//! reading until the reader is pending and then writing every queued frame
//! and flushing. A pass whose reader went pending, whose writes and flushes
//! all completed, and which ended on a completed flush has written every
//! frame queued before it started writing. [`ConnProbe::flushed`] wakes the
//! connection (via the reader's stored waker) so that such a pass starts
//! after the caller's frames were queued, then waits for it to be seen.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

/// What [`ProbedIo`] has seen, shared with everyone waiting for a flush.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Seen {
    /// Sequence number of the read that began the latest complete pass.
    completed: u64,
    /// The connection's I/O was dropped: nothing more will be written.
    closed: bool,
}

/// Connection-wide flush tracking, shared by the I/O and all emitters.
#[derive(Debug)]
pub(crate) struct ConnProbe {
    /// Reads started so far (each read's sequence number is the new value).
    reads: AtomicU64,
    /// Waker of the connection task, taken from its last pending read.
    read_waker: Mutex<Option<Waker>>,
    /// Callers inside [`ConnProbe::flushed`]; while any, passes re-wake.
    waiters: AtomicUsize,
    seen: watch::Sender<Seen>,
}

/// The connection is gone, so a flush can never complete.
#[derive(Debug)]
pub(crate) struct ConnectionClosed;

impl ConnProbe {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            reads: AtomicU64::new(0),
            read_waker: Mutex::new(None),
            waiters: AtomicUsize::new(0),
            seen: watch::Sender::new(Seen::default()),
        })
    }

    /// Resolves once every frame queued before the call has been written to
    /// the transport and flushed.
    pub(crate) async fn flushed(&self) -> Result<(), ConnectionClosed> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = WaiterGuard(&self.waiters);
        let mut seen = self.seen.subscribe();
        let after = self.reads.load(Ordering::SeqCst);
        self.wake_connection();
        let state = seen
            .wait_for(|s| s.closed || s.completed > after)
            .await
            .map_err(|_| ConnectionClosed)?;
        if state.closed && state.completed <= after {
            return Err(ConnectionClosed);
        }
        Ok(())
    }

    fn wake_connection(&self) {
        let waker = lock(&self.read_waker).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn store_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.read_waker);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn publish_completed(&self, read_seq: u64) {
        self.seen.send_if_modified(|s| {
            let newer = read_seq > s.completed;
            if newer {
                s.completed = read_seq;
            }
            newer
        });
    }

    fn publish_closed(&self) {
        self.seen.send_modify(|s| s.closed = true);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The module's transport (a reader and a writer) with the pass tracking
/// described in the module docs. Only the connection task uses it, so the
/// per-pass state is plain fields.
pub(crate) struct ProbedIo<R, W> {
    reader: R,
    writer: W,
    probe: Arc<ConnProbe>,
    /// Sequence number of the pending read that ended the reading part of
    /// the current pass, while every write and flush since has completed.
    candidate: Option<u64>,
    /// The last operation since `candidate` was a completed flush.
    ends_flushed: bool,
}

impl<R, W> ProbedIo<R, W> {
    pub(crate) fn new(reader: R, writer: W, probe: Arc<ConnProbe>) -> Self {
        Self {
            reader,
            writer,
            probe,
            candidate: None,
            ends_flushed: false,
        }
    }

    fn write_outcome<T>(&mut self, res: &Poll<std::io::Result<T>>) {
        self.ends_flushed = false;
        if !matches!(res, Poll::Ready(Ok(_))) {
            self.candidate = None;
        }
    }
}

impl<R, W> Drop for ProbedIo<R, W> {
    fn drop(&mut self) {
        self.probe.publish_closed();
    }
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for ProbedIo<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let seq = this.probe.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if let (Some(candidate), true) = (this.candidate, this.ends_flushed) {
            // The previous pass wrote everything and flushed: complete.
            this.probe.publish_completed(candidate);
        }
        this.candidate = None;
        this.ends_flushed = false;
        let res = Pin::new(&mut this.reader).poll_read(cx, buf);
        if res.is_pending() {
            this.candidate = Some(seq);
            this.probe.store_waker(cx.waker());
        }
        res
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for ProbedIo<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.writer).poll_write(cx, buf);
        this.write_outcome(&res);
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.writer).poll_write_vectored(cx, bufs);
        this.write_outcome(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.writer).poll_flush(cx);
        if let Poll::Ready(Ok(())) = res {
            this.ends_flushed = true;
            if this.candidate.is_some() && this.probe.waiters.load(Ordering::SeqCst) > 0 {
                // Someone waits for this pass to be confirmed complete, which
                // only the next read can do: make sure there is one.
                cx.waker().wake_by_ref();
            }
        } else {
            this.ends_flushed = false;
            this.candidate = None;
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.candidate = None;
        this.ends_flushed = false;
        Pin::new(&mut this.writer).poll_shutdown(cx)
    }
}
