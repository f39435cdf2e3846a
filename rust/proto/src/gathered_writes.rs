//! Gathers the writes of one runtime pass into one system call.
//!
//! HTTP/2 (h2 under hyper) flushes each time its connection task runs out
//! of frames, and the frames of one call reach it from several tasks: a
//! response's HEADERS from the task that ran the handler, its DATA from the
//! task that pumps the body, a request's DATA from the task hyper spawns
//! to send the body. Each flush is a `write` and, on the other side, a
//! wake-up that reads a fragment (a peer woken for HEADERS alone has to
//! sleep and wake again for the DATA). [`GatheredWrites`] holds what is
//! written and defers the flush once, until the runtime has run every task
//! that was ready, so what those tasks add leaves in the same `write`.
//!
//! The deferral costs no latency a peer could see: the bytes leave before
//! the runtime next waits for I/O.

use std::{
    future::Future,
    io::IoSlice,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many held bytes, writes go out before more are taken, so a
/// large body is never held whole.
const HOLD_AT_MOST: usize = 256 * 1024;

type Yield = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An I/O stream whose writes are held until a flush that has waited for
/// the runtime's other ready tasks. Reads pass straight through.
pub struct GatheredWrites<IO> {
    io: IO,
    held: Vec<u8>,
    /// Bytes of `held` already written.
    sent: usize,
    /// The pending deferral of the next flush, once it has started.
    waiting: Option<Yield>,
}

impl<IO> GatheredWrites<IO> {
    /// Wraps `io`.
    pub fn new(io: IO) -> Self {
        GatheredWrites {
            io,
            held: Vec::new(),
            sent: 0,
            waiting: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncWrite + Unpin> GatheredWrites<IO> {
    /// Writes out everything held; `Ready(Ok)` once none is left.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for more when the held bytes have reached the bound.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.held.len() >= HOLD_AT_MOST {
            ready!(self.poll_send_held(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for GatheredWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for GatheredWrites<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut n = 0;
        for buf in bufs {
            self.held.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.held.len() > this.sent {
            // Once per flush: let the runtime's ready tasks add their
            // frames first (the yield wakes this task after them).
            let waiting = this
                .waiting
                .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            ready!(waiting.as_mut().poll(cx));
            this.waiting = None;
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A flush waits one pass: what is written meanwhile leaves with it,
    /// in one write, and nothing leaves before.
    #[tokio::test(flavor = "current_thread")]
    async fn the_first_flush_waits_for_the_rest_of_the_pass() {
        let (near, far) = tokio::net::UnixStream::pair().unwrap();
        let mut near = GatheredWrites::new(near);
        std::future::poll_fn(|cx| {
            let wrote = Pin::new(&mut near).poll_write(cx, b"first");
            assert!(matches!(wrote, Poll::Ready(Ok(5))));
            assert!(Pin::new(&mut near).poll_flush(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let mut got = vec![0u8; 64];
        let early = far.try_read(&mut got);
        assert_eq!(
            early.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
        near.write_all(b"-second").await.unwrap();
        near.flush().await.unwrap();
        far.readable().await.unwrap();
        let n = far.try_read(&mut got).unwrap();
        assert_eq!(&got[..n], b"first-second");
    }

    /// A flush sends everything held even when nothing else runs.
    #[tokio::test(flavor = "current_thread")]
    async fn a_flush_alone_sends_everything() {
        let (near, mut far) = tokio::net::UnixStream::pair().unwrap();
        let mut near = GatheredWrites::new(near);
        near.write_all(b"one").await.unwrap();
        near.write_all(b"two").await.unwrap();
        near.flush().await.unwrap();
        let mut got = [0u8; 6];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"onetwo");
    }

    /// More than the hold bound goes out without waiting for a flush, so a
    /// large body streams instead of piling up.
    #[tokio::test(flavor = "current_thread")]
    async fn large_writes_are_not_held_whole() {
        let (near, mut far) = tokio::net::UnixStream::pair().unwrap();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut near = GatheredWrites::new(near);
        let block = vec![7u8; 100 * 1024];
        for _ in 0..5 {
            near.write_all(&block).await.unwrap();
            assert!(near.held.len() <= HOLD_AT_MOST + block.len());
        }
        near.shutdown().await.unwrap();
        drop(near);
        assert_eq!(reader.await.unwrap().len(), 5 * block.len());
    }
}
