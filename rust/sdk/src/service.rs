//! The `module_communication.Invoker` service: finds the function, decodes
//! its arguments, runs it in its own task and streams what it sends.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use norgopolis_proto::module_communication::{invoker_server::Invoker, Invocation, MessagePack};
use tokio::{sync::mpsc, task::JoinHandle};
use tonic::{codegen::tokio_stream::Stream, Request, Response, Status};

use crate::{conn_probe::ConnProbe, handler::Function, stream_probe::StreamProbe, Emitter, Error};

/// Items a handler may send ahead of the caller. Small on purpose: results
/// should flow, not pile up.
const CHANNEL_CAPACITY: usize = 8;

/// A module's name and functions, shared by all calls.
pub(crate) struct Registry {
    pub(crate) name: String,
    pub(crate) functions: BTreeMap<String, Function>,
}

impl Registry {
    fn unknown_function(&self, function: &str) -> Status {
        let names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        Status::not_found(format!(
            "module '{}' has no function '{}' (has: {})",
            self.name,
            function,
            names.join(", ")
        ))
    }
}

/// The service of one connection.
pub(crate) struct InvokerImpl {
    registry: Arc<Registry>,
    conn: Arc<ConnProbe>,
}

impl InvokerImpl {
    pub(crate) fn new(registry: Arc<Registry>, conn: Arc<ConnProbe>) -> Self {
        Self { registry, conn }
    }
}

#[tonic::async_trait]
impl Invoker for InvokerImpl {
    type InvokeStream = ResponseStream;

    async fn invoke(
        &self,
        request: Request<Invocation>,
    ) -> Result<Response<ResponseStream>, Status> {
        let Invocation {
            function_name,
            args,
        } = request.into_inner();
        let function = self
            .registry
            .functions
            .get(&function_name)
            .ok_or_else(|| self.registry.unknown_function(&function_name))?;

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let probe = StreamProbe::new();
        let out = Emitter::new(tx, Arc::clone(&probe), Arc::clone(&self.conn));
        let args = args.map(|a| a.data).unwrap_or_default();
        let call = function.start(&args, out).map_err(|complaint| {
            Status::invalid_argument(format!(
                "{}.{} expects {}: {}",
                self.registry.name, function_name, function.shape, complaint
            ))
        })?;
        tracing::debug!(function = %function_name, "call started");

        let stream = ResponseStream {
            rx,
            task: Some(tokio::spawn(call)),
            outcome: None,
            finished: false,
            function: function_name,
            probe: Arc::clone(&probe),
        };
        let mut response = Response::new(stream);
        response.extensions_mut().insert(probe);
        Ok(response)
    }
}

/// The items of one call, then its outcome.
///
/// Items come first, in the order sent; when the handler has returned, the
/// items it sent before are drained and its error, if any, ends the stream.
/// Dropping the stream (the caller went away) aborts the handler's task.
pub(crate) struct ResponseStream {
    rx: mpsc::Receiver<MessagePack>,
    task: Option<JoinHandle<Result<(), Error>>>,
    /// The error to end with, once the handler has returned one.
    outcome: Option<Status>,
    finished: bool,
    function: String,
    probe: Arc<StreamProbe>,
}

impl ResponseStream {
    fn settle(&self, joined: Result<Result<(), Error>, tokio::task::JoinError>) -> Option<Status> {
        match joined {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.into()),
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let what = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                tracing::error!(function = %self.function, "handler panicked: {what}");
                Some(Status::internal(format!(
                    "function '{}' panicked: {what}",
                    self.function
                )))
            }
            Err(_) => Some(Status::cancelled(format!(
                "function '{}' was cancelled",
                self.function
            ))),
        }
    }
}

impl Stream for ResponseStream {
    type Item = Result<MessagePack, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        // Buffered items always go first, so an error follows the items
        // sent before it.
        if let Poll::Ready(Some(item)) = this.rx.poll_recv(cx) {
            this.probe.note_yielded();
            return Poll::Ready(Some(Ok(item)));
        }
        if let Some(task) = this.task.as_mut() {
            let joined = match Pin::new(task).poll(cx) {
                Poll::Ready(joined) => joined,
                Poll::Pending => return Poll::Pending,
            };
            this.task = None;
            this.outcome = this.settle(joined);
            // Items from emitter clones the handler left behind are refused
            // from now on; what was sent before is still delivered.
            this.rx.close();
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                this.probe.note_yielded();
                Poll::Ready(Some(Ok(item)))
            }
            // A clone may still hold a send permit; its item comes first.
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(this.outcome.take().map(Err))
            }
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            tracing::debug!(function = %self.function, "caller went away; cancelling");
            task.abort();
        }
    }
}
