//! Request and response bodies over one HTTP/2 stream (the `h2` crate).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use h2::{RecvStream, SendStream};
use http_body::{Body, Frame};
use tokio::sync::oneshot;
use tonic::{body::BoxBody, codegen::Bytes, Status};

/// An `h2` error as the status a call ends with: a lost connection (I/O
/// failure or the server going away) is `Unavailable`, a reset stream keeps
/// the code gRPC gives its reason.
pub(crate) fn status_of(e: h2::Error) -> Status {
    if e.is_io() || e.is_go_away() {
        Status::unavailable(format!(
            "the connection to the norgopolis server was lost: {e}"
        ))
    } else {
        Status::from_error(Box::new(e))
    }
}

/// Sends a request body on `stream`: inline as far as it is ready (a call's
/// arguments always are, so they leave in the same write as the headers),
/// the rest from a task of its own (the Attach stream's later messages).
/// Returns a sender whose drop tells that task the caller gave up on the
/// response.
pub(crate) async fn send_body(
    mut body: BoxBody,
    mut stream: SendStream<Bytes>,
) -> Option<oneshot::Sender<()>> {
    let done = std::future::poll_fn(|cx| Poll::Ready(pump(&mut body, &mut stream, cx))).await;
    if done {
        return None;
    }
    let (gone_tx, mut gone) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let finished = std::future::poll_fn(|cx| {
            if Pin::new(&mut gone).poll(cx).is_ready() {
                // The response was dropped: stop sending and cancel.
                stream.send_reset(h2::Reason::CANCEL);
                return Poll::Ready(());
            }
            if let Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) = stream.poll_reset(cx) {
                return Poll::Ready(());
            }
            match pump(&mut body, &mut stream, cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        finished.await;
    });
    Some(gone_tx)
}

/// Moves every ready frame of `body` to `stream`; true once the body has
/// ended (or failed, which resets the stream).
fn pump(body: &mut BoxBody, stream: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> bool {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return false,
            Poll::Ready(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return true;
            }
            Poll::Ready(Some(Err(status))) => {
                tracing::debug!(%status, "request body failed; resetting the stream");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return true;
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        let end = body.is_end_stream();
                        if stream.send_data(data, end).is_err() {
                            return true;
                        }
                        if end {
                            return true;
                        }
                        continue;
                    }
                    Err(frame) => frame,
                };
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return true;
                }
            }
        }
    }
}

/// A response body: the stream's data, then its trailers (where gRPC puts
/// the status). Received data is handed back to flow control at once, so
/// the server may go on sending.
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    trailers_done: bool,
    /// Dropped with the body: tells a still-running request sender to stop.
    _gone: Option<oneshot::Sender<()>>,
}

impl RecvBody {
    pub(crate) fn new(recv: RecvStream, gone: Option<oneshot::Sender<()>>) -> Self {
        RecvBody {
            recv,
            data_done: false,
            trailers_done: false,
            _gone: gone,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(status_of(e)))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        if this.trailers_done {
            return Poll::Ready(None);
        }
        let polled = this.recv.poll_trailers(cx);
        if polled.is_ready() {
            this.trailers_done = true;
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(status_of(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_done
    }
}
