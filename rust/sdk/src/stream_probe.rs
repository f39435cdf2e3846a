//! Knowing when a call's items have left the response body for HTTP/2.
//!
//! An item sent by a handler passes a channel, then tonic's encoder (which
//! batches whatever is ready into one body frame), then hyper, which hands
//! each body frame to h2 and only then polls the body again. So when the
//! body is polled, every item inside frames it returned earlier is queued in
//! h2; [`TrackedBody`] records that in the call's [`StreamProbe`], which
//! [`crate::Emitter::flush`] waits on before waiting for the connection.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tonic::{body::BoxBody, codegen::Bytes, Status};

/// Per-call counters: items sent, items the response stream yielded, and
/// items handed to h2.
#[derive(Debug)]
pub(crate) struct StreamProbe {
    sent: AtomicU64,
    yielded: AtomicU64,
    handed: watch::Sender<u64>,
}

/// The call ended before its items were handed over.
#[derive(Debug)]
pub(crate) struct StreamGone;

impl StreamProbe {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            sent: AtomicU64::new(0),
            yielded: AtomicU64::new(0),
            handed: watch::Sender::new(0),
        })
    }

    /// An item entered the call's channel.
    pub(crate) fn note_sent(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// The response stream passed an item on to the encoder.
    pub(crate) fn note_yielded(&self) {
        self.yielded.fetch_add(1, Ordering::SeqCst);
    }

    /// Resolves once every item sent before the call is queued in h2.
    pub(crate) async fn handed_over(&self) -> Result<(), StreamGone> {
        let target = self.sent.load(Ordering::SeqCst);
        let mut handed = self.handed.subscribe();
        handed
            .wait_for(|h| *h >= target)
            .await
            .map(|_| ())
            .map_err(|_| StreamGone)
    }

    /// Items the response stream has yielded so far.
    pub(crate) fn yielded(&self) -> u64 {
        self.yielded.load(Ordering::SeqCst)
    }

    /// The first `count` yielded items are queued on the transport.
    pub(crate) fn note_handed(&self, count: u64) {
        self.handed.send_if_modified(|h| {
            let newer = count > *h;
            if newer {
                *h = count;
            }
            newer
        });
    }
}

/// A response body that reports hand-overs to its call's [`StreamProbe`].
pub(crate) struct TrackedBody {
    inner: BoxBody,
    probe: Option<Arc<StreamProbe>>,
    /// Items yielded up to the last data frame returned, not yet reported.
    in_returned_frames: Option<u64>,
}

impl TrackedBody {
    pub(crate) fn new(inner: BoxBody, probe: Option<Arc<StreamProbe>>) -> Self {
        Self {
            inner,
            probe,
            in_returned_frames: None,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(probe) = &this.probe else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if let Some(count) = this.in_returned_frames.take() {
            // Polled again: hyper has given the earlier frames to h2.
            probe.note_handed(count);
        }
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &res {
            if frame.is_data() {
                this.in_returned_frames = Some(probe.yielded.load(Ordering::SeqCst));
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
