//! `communication.Forwarder`: the public protocol's call path, on
//! [`Router`] (see there for limits, deadlines and cancellation).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use norgopolis_proto::communication::{
    forwarder_server::{Forwarder, ForwarderServer},
    Invocation, InvocationOverride, MessagePack, OverrideStatus,
};
use tonic::{
    body::BoxBody, metadata::MetadataMap, server::NamedService, Code, Request, Response, Status,
};
use tower::Service;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    accept::client_conn::Conn,
    services::router::{oversized_arguments, unless_panicked, Ready, RoutedCall, Router},
};

/// Routes calls to modules and streams their results back item by item.
pub struct ForwarderService {
    /// Starts the calls.
    pub router: Arc<Router>,
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<MessagePack, Status>> + Send>>;

#[tonic::async_trait]
impl Forwarder for ForwarderService {
    type ForwardStream = ResultStream;

    async fn forward(
        &self,
        request: Request<Invocation>,
    ) -> Result<Response<ResultStream>, Status> {
        let timeout = caller_timeout(request.metadata()).map_err(Status::invalid_argument)?;
        let conn = request.extensions().get::<Conn>().cloned();
        let inv = request.into_inner();
        let args = inv.args.map(|a| a.data).unwrap_or_default();
        let mut call = self
            .router
            .start(conn.as_ref(), &inv.module, inv.function_name, args, timeout)
            .await?;
        let (ready, ended) = take_ready(&mut call);
        let ready = futures::stream::iter(ready);
        if ended {
            // All here: it leaves with the headers, and no task is needed.
            return Ok(Response::new(Box::pin(ready)));
        }
        let (tx, rx) = mpsc::channel(RESULTS_AHEAD);
        let failed = tx.clone();
        // Boxed for the same reason as a lean call's task (lean_calls::start).
        tokio::spawn(unless_panicked(Box::pin(pump(call, tx)), move |status| {
            let _ = failed.try_send(Err(status));
        }));
        Ok(Response::new(Box::pin(
            ready.chain(ReceiverStream::new(rx)),
        )))
    }

    async fn r#override(
        &self,
        request: Request<InvocationOverride>,
    ) -> Result<Response<OverrideStatus>, Status> {
        let r = request.into_inner();
        Err(Status::unimplemented(format!(
            "Override ({}.{}) is not supported by this norgopolis server",
            r.module, r.function_name
        )))
    }
}

/// `communication.Forwarder` with the message size limit, whose errors
/// for oversized arguments name the limit's config key as the lean
/// transport's do (tonic refuses them before the handler runs, in its
/// own words).
#[derive(Clone)]
pub struct SizedForwarder {
    inner: ForwarderServer<ForwarderService>,
    limit: usize,
}

impl SizedForwarder {
    /// The service for `forwarder`, taking and sending messages of at
    /// most `limit` bytes.
    pub fn new(forwarder: Arc<ForwarderService>, limit: usize) -> Self {
        let inner = ForwarderServer::from_arc(forwarder)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        SizedForwarder { inner, limit }
    }
}

impl NamedService for SizedForwarder {
    const NAME: &'static str = <ForwarderServer<ForwarderService> as NamedService>::NAME;
}

impl Service<http::Request<BoxBody>> for SizedForwarder {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<BoxBody>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let answer = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            let mut response = answer.await?;
            name_the_limit(response.headers_mut(), limit);
            Ok(response)
        })
    }
}

/// Rewrites tonic's refusal of oversized arguments (`OutOfRange`, "decoded
/// message length too large: found N bytes, …") into ours.
fn name_the_limit(headers: &mut http::HeaderMap, limit: usize) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let message = status.message();
    if status.code() != Code::OutOfRange || !message.contains("message length too large") {
        return;
    }
    let found = message
        .split("found ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    let ours = Status::resource_exhausted(oversized_arguments(found, limit));
    if ours.add_header(headers).is_err() {
        tracing::debug!("could not reword an oversized-arguments error");
    }
}

/// Results queued for a gRPC caller beyond what HTTP/2 has taken; a full
/// queue means the caller stopped reading.
const RESULTS_AHEAD: usize = 16;

/// The results the module has already sent (at most [`RESULTS_AHEAD`],
/// as the queue would hold), and whether the call has ended. HTTP/2 sends
/// them in the same write as the response headers, so the caller is woken
/// once for a one-result call instead of once for the headers and again
/// for the result (what the public server does too).
fn take_ready(call: &mut RoutedCall) -> (Vec<Result<MessagePack, Status>>, bool) {
    let mut ready = Vec::new();
    while ready.len() < RESULTS_AHEAD {
        match call.take_ready() {
            Ready::Item(data) => ready.push(Ok(MessagePack { data })),
            Ready::Ended => return (ready, true),
            Ready::NotYet => break,
        }
    }
    (ready, false)
}

/// Hands the call's results to the caller's stream. The call lives here:
/// when the caller goes away (the stream is dropped) it is dropped, which
/// cancels the module's call, even while the module is between results.
/// A caller that stops reading pauses the call without holding a module
/// slot ([`RoutedCall::wait_for_room`]).
async fn pump(mut call: RoutedCall, tx: mpsc::Sender<Result<MessagePack, Status>>) {
    loop {
        let next = tokio::select! {
            next = call.next() => next,
            _ = tx.closed() => return,
        };
        let Some(next) = next else { return };
        match call.wait_for_room(tx.reserve()).await {
            Ok(Ok(room)) => room.send(next.map(|data| MessagePack { data })),
            // The caller went away.
            Ok(Err(_)) => return,
            Err(status) => {
                drop(call);
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}

/// The caller's `grpc-timeout`, if any ("100m" = 100 ms; units H M S m u n).
fn caller_timeout(metadata: &MetadataMap) -> Result<Option<Duration>, String> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "grpc-timeout is not text".to_string())?;
    parse_grpc_timeout(text)
        .map(Some)
        .ok_or_else(|| format!("bad grpc-timeout {text:?}"))
}

fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
    }
}
