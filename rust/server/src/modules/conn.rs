//! The HTTP/2 connection to one module over its stdio.
//!
//! We drive an h2 client connection ourselves (rather than a tonic
//! `Channel`, which reconnects and hides why a connection died) so the
//! supervisor learns the moment the connection ends and why: the module
//! wrote something that is not HTTP/2 (a stray print to stdout), stopped
//! answering pings, or closed its end.
//!
//! It is h2 itself and not hyper's client on top of it: hyper sends a
//! request's headers and its body from two different tasks, so every call
//! cost the module two writes to wake up for (and the router a task and
//! two channels). A call's arguments are one message, known in full when
//! the call starts, so here headers and body are queued together and go
//! out in one write.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{client::SendRequest, RecvStream};
use http_body::{Body, Frame};
use norgopolis_proto::module_communication::{self as mc, invoker_client::InvokerClient};
use tonic::body::BoxBody;

use super::{
    lean::{LeanClient, LeanStream},
    stdio::{CloseSignal, ModuleIo},
};

/// Results one call may have waiting at the router for its caller. Small
/// enough that calls whose callers stopped reading cannot add up to h2's
/// limit on buffered small DATA frames (which would end the connection
/// with "too_many_data_frames" and fail the module for every caller),
/// large enough for a 64 KiB result in one window.
const STREAM_WINDOW: u32 = 128 * 1024;

/// The connection window. h2 sizes its small-frame budget from it (half of
/// it, ~250 per buffered small frame), so with this one (the largest
/// HTTP/2 allows) about 320 calls of small (10-byte) items can sit unread
/// at once, more than twice the default `max_calls_per_module` (128): the
/// calls holding slots plus as many paused ones that gave theirs back. It
/// bounds nothing else: each call is bounded by its stream window.
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// A gRPC client of the module's `Invoker` service.
pub type ModuleClient = InvokerClient<ModuleChannel>;

/// Why a request to the module failed (h2's error, or the body's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends requests on the module's connection; cheap to clone.
#[derive(Clone)]
pub struct ModuleChannel(SendRequest<Bytes>);

impl tower::Service<http::Request<BoxBody>> for ModuleChannel {
    type Response = http::Response<ModuleBody>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Waiting for a free stream happens in `call` (h2's `ready`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let send = self.0.clone();
        Box::pin(async move {
            let (parts, mut body) = request.into_parts();
            // The encoded Invocation: one message, ready at once.
            let args = collect(&mut body).await?;
            let mut send = send.ready().await?;
            let (response, mut stream) =
                send.send_request(http::Request::from_parts(parts, ()), args.is_empty())?;
            if !args.is_empty() {
                // Queued with the headers: both leave in the same write.
                stream.send_data(args, true)?;
            }
            let response = response.await?;
            Ok(response.map(|recv| ModuleBody {
                recv,
                data_done: false,
            }))
        })
    }
}

/// A request body's bytes (tonic's encoding of one message: one frame).
async fn collect(body: &mut BoxBody) -> Result<Bytes, BoxError> {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(1);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

/// A module's response body: DATA frames, then trailers. Window capacity
/// is given back as data is taken, so a call whose caller stops reading
/// holds at most [`STREAM_WINDOW`] at the router.
pub struct ModuleBody {
    recv: RecvStream,
    data_done: bool,
}

impl Body for ModuleBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// The connection to a module, over the transport it declared.
#[derive(Clone)]
pub enum ModuleConn {
    /// gRPC over HTTP/2 (every module unless it declares otherwise).
    Grpc(ModuleClient),
    /// The lean transport (modules built with our SDK that ask for it).
    Lean(LeanClient),
}

/// One call's results, from either transport.
pub enum ModuleStream {
    /// A gRPC response stream (boxed: it is much larger than a lean call).
    Grpc(Box<tonic::Streaming<mc::MessagePack>>),
    /// A lean call.
    Lean(LeanStream),
}

impl ModuleStream {
    /// The next result; `None` after the last; an error ends the call.
    /// Dropping the stream before the end cancels the call in the module.
    pub async fn message(&mut self) -> Result<Option<mc::MessagePack>, tonic::Status> {
        match self {
            ModuleStream::Grpc(s) => s.message().await,
            ModuleStream::Lean(s) => Ok(s.message().await?.map(|data| mc::MessagePack { data })),
        }
    }
}

/// How a module connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEnd {
    /// We closed it (stopping the module).
    Asked,
    /// The module closed its stdout or the pipe broke: usually it is exiting.
    Closed(String),
    /// The module sent bytes that are not valid HTTP/2.
    Broken(String),
    /// A ping went unanswered for the keep-alive timeout.
    Unanswered,
    /// Our HTTP/2 stack refused to buffer more of the module's small frames.
    Flooded(String),
    /// The module sent bytes that are not valid lean frames.
    Garbled(String),
}

/// The connection task's future: drives the connection, tells how it ended.
pub type ConnTask = Pin<Box<dyn Future<Output = ConnEnd> + Send + 'static>>;

/// Ping settings for module connections.
#[derive(Debug, Clone, Copy)]
pub struct Ping {
    /// How often an idle connection is pinged.
    pub interval: Duration,
    /// How long a ping may go unanswered.
    pub timeout: Duration,
}

/// Opens HTTP/2 on the module's pipes. The returned task must be polled
/// (the supervisor does) for the connection to make progress.
pub async fn connect(
    io: ModuleIo,
    close: CloseSignal,
    ping: Ping,
    max_message_size: usize,
) -> Result<(ModuleClient, ConnTask), h2::Error> {
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // A module's large result in one DATA frame rather than 16 KiB ones.
        .max_frame_size(crate::serve::MAX_FRAME)
        .handshake::<_, Bytes>(io)
        .await?;
    let pings = connection.ping_pong();
    let task: ConnTask = Box::pin(async move {
        let keep_alive = async {
            match pings {
                Some(pings) => keep_alive(pings, ping).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection => classify(result, &close),
            () = keep_alive => if close.is_raised() { ConnEnd::Asked } else { ConnEnd::Unanswered },
        }
    });
    let client = InvokerClient::with_origin(
        ModuleChannel(send),
        http::Uri::from_static("http://module.local"),
    )
    .max_decoding_message_size(max_message_size)
    .max_encoding_message_size(max_message_size);
    Ok((client, task))
}

/// Pings the module every `ping.interval`; returns when one goes
/// unanswered for `ping.timeout`. (An error sending a ping is the
/// connection's: it ends with that error.)
async fn keep_alive(mut pings: h2::PingPong, ping: Ping) {
    loop {
        tokio::time::sleep(ping.interval).await;
        match tokio::time::timeout(ping.timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => std::future::pending::<()>().await,
            Err(_) => return,
        }
    }
}

fn classify(result: Result<(), h2::Error>, close: &CloseSignal) -> ConnEnd {
    if close.is_raised() {
        return ConnEnd::Asked;
    }
    match result {
        Ok(()) if close.stdout_closed() => ConnEnd::Closed("it closed its stdout".into()),
        Ok(()) => ConnEnd::Closed("it ended the HTTP/2 connection".into()),
        Err(e) if e.is_io() => ConnEnd::Closed(e.to_string()),
        Err(e) if e.is_library() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) => {
            // Our own HTTP/2 stack gave up on buffered frames the module
            // sent faster than its callers read them.
            ConnEnd::Flooded(e.to_string())
        }
        Err(e) if close.stdout_closed() => ConnEnd::Closed(e.to_string()),
        Err(e) => ConnEnd::Broken(e.to_string()),
    }
}
