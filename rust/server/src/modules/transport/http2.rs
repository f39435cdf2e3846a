//! The HTTP/2 connection to one module over its stdio.
//!
//! We drive hyper's client connection ourselves (rather than a tonic
//! `Channel`, which reconnects and hides why a connection died) so the
//! supervisor learns the moment the connection ends and why: the module
//! wrote something that is not HTTP/2 (a stray print to stdout), stopped
//! answering pings, or closed its end.

use std::{future::Future, pin::Pin};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use norgopolis_proto::module_communication::invoker_client::InvokerClient;
use tonic::body::BoxBody;

use super::{
    conn_end::{ConnEnd, ConnTask, Ping},
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

/// Sends requests on the module's connection; cheap to clone.
#[derive(Clone)]
pub struct ModuleChannel(SendRequest<BoxBody>);

impl tower::Service<http::Request<BoxBody>> for ModuleChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Opens HTTP/2 on the module's pipes. The returned task must be polled
/// (the supervisor does) for the connection to make progress.
pub async fn connect(
    io: ModuleIo,
    close: CloseSignal,
    ping: Ping,
    max_message_size: usize,
) -> Result<(ModuleClient, ConnTask), hyper::Error> {
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(ping.interval)
        .keep_alive_timeout(ping.timeout)
        .keep_alive_while_idle(true);
    let (send, connection) = builder.handshake(TokioIo::new(io)).await?;
    let task: ConnTask = Box::pin(async move {
        let result = connection.await;
        classify(result, &close)
    });
    let client = InvokerClient::with_origin(
        ModuleChannel(send),
        http::Uri::from_static("http://module.local"),
    )
    .max_decoding_message_size(max_message_size)
    .max_encoding_message_size(max_message_size);
    Ok((client, task))
}

fn classify(result: Result<(), hyper::Error>, close: &CloseSignal) -> ConnEnd {
    if close.is_raised() {
        return ConnEnd::Asked;
    }
    match result {
        // hyper ends a connection whose keep-alive ping timed out without an
        // error; a module that closed its stdout shows up as EOF first.
        Ok(()) if close.stdout_closed() => ConnEnd::Closed("it closed its stdout".into()),
        Ok(()) => ConnEnd::Unanswered,
        Err(e) if e.is_timeout() => ConnEnd::Unanswered,
        Err(e) => {
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                if let Some(h2) = s.downcast_ref::<h2::Error>() {
                    if h2.is_io() {
                        return ConnEnd::Closed(h2.to_string());
                    }
                    if h2.is_library() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                        // Our own HTTP/2 stack gave up on buffered frames the
                        // module sent faster than its callers read them.
                        return ConnEnd::Flooded(h2.to_string());
                    }
                    return ConnEnd::Broken(h2.to_string());
                }
                if s.downcast_ref::<std::io::Error>().is_some() {
                    return ConnEnd::Closed(s.to_string());
                }
                source = s.source();
            }
            if close.stdout_closed() {
                ConnEnd::Closed(e.to_string())
            } else {
                ConnEnd::Broken(e.to_string())
            }
        }
    }
}
