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

use crate::{
    conn_probe::ConnProbe, emitter::ConnFlush, handler::Function, pacing::Pacer,
    stream_probe::StreamProbe, Emitter, Error,
};

/// Items a handler may send ahead of the caller. Small on purpose: results
/// should flow, not pile up.
const CHANNEL_CAPACITY: usize = 8;

/// A module's name and functions, shared by all calls.
pub(crate) struct Registry {
    pub(crate) name: String,
    pub(crate) functions: BTreeMap<String, Function>,
}

impl Registry {
    /// Looks the function up, decodes the arguments and starts the handler
    /// in its own task; the stream yields what it sends, then its outcome.
    /// Shared by both transports.
    pub(crate) fn start_call(
        &self,
        function_name: String,
        args: &[u8],
        conn: ConnFlush,
    ) -> Result<(ResponseStream, Arc<StreamProbe>), Error> {
        let function = self
            .functions
            .get(&function_name)
            .ok_or_else(|| self.unknown_function(&function_name))?;

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let probe = StreamProbe::new();
        let out = Emitter::new(tx, Arc::clone(&probe), conn);
        let call = function.start(args, out).map_err(|complaint| {
            Error::invalid_argument(format!(
                "{}.{} expects {}: {}",
                self.name, function_name, function.shape, complaint
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
            pacer: Pacer::default(),
            held: None,
        };
        Ok((stream, probe))
    }

    fn unknown_function(&self, function: &str) -> Error {
        let names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        Error::not_found(format!(
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
        let args = args.map(|a| a.data).unwrap_or_default();
        let (stream, probe) = self
            .registry
            .start_call(function_name, &args, ConnFlush::H2(Arc::clone(&self.conn)))
            .map_err(Status::from)?;
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
    /// When to let items out on their own (see [`crate::pacing`]).
    pacer: Pacer,
    /// An item received but held back for one pause.
    held: Option<MessagePack>,
}

impl ResponseStream {
    /// Yields a received item, or holds it back for one pause.
    fn pace(
        &mut self,
        item: MessagePack,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<MessagePack, Status>>> {
        if self.pacer.pause_due() {
            self.held = Some(item);
            return self.pause(cx);
        }
        self.pacer.yielded();
        self.probe.note_yielded();
        Poll::Ready(Some(Ok(item)))
    }

    /// Returns `Pending`, so that tonic sends what it has gathered; with
    /// `cx` woken when the stream can go on at once.
    fn pause(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<MessagePack, Status>>> {
        self.pacer.flushed();
        if self.held.is_some() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

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
        if let Some(item) = this.held.take() {
            this.pacer.yielded();
            this.probe.note_yielded();
            return Poll::Ready(Some(Ok(item)));
        }
        // Buffered items always go first, so an error follows the items
        // sent before it.
        if let Poll::Ready(Some(item)) = this.rx.poll_recv(cx) {
            return this.pace(item, cx);
        }
        if let Some(task) = this.task.as_mut() {
            let joined = match Pin::new(task).poll(cx) {
                Poll::Ready(joined) => joined,
                Poll::Pending => return this.pause(cx),
            };
            this.task = None;
            this.outcome = this.settle(joined);
            // Items from emitter clones the handler left behind are refused
            // from now on; what was sent before is still delivered.
            this.rx.close();
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => this.pace(item, cx),
            // A clone may still hold a send permit; its item comes first.
            Poll::Pending => this.pause(cx),
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

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, task::Waker};

    use super::*;

    /// A response stream over `items` whose handler has already returned.
    async fn finished_stream(items: usize) -> ResponseStream {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        for i in 0..items {
            tx.send(MessagePack {
                data: vec![i as u8],
            })
            .await
            .unwrap();
        }
        drop(tx);
        let task = tokio::spawn(async { Ok(()) });
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
        ResponseStream {
            rx,
            task: Some(task),
            outcome: None,
            finished: false,
            function: "f".into(),
            probe: StreamProbe::new(),
            pacer: Pacer::default(),
            held: None,
        }
    }

    /// Polls once with a waker that records whether it was woken.
    fn poll_once(s: &mut ResponseStream) -> (Poll<Option<Result<MessagePack, Status>>>, bool) {
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Flag(Arc::clone(&woken))));
        let mut cx = Context::from_waker(&waker);
        let poll = Pin::new(s).poll_next(&mut cx);
        (poll, woken.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn item(poll: Poll<Option<Result<MessagePack, Status>>>) -> u8 {
        match poll {
            Poll::Ready(Some(Ok(m))) => m.data[0],
            other => panic!("expected an item, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_first_of_several_ready_items_is_let_out_alone() {
        let mut s = finished_stream(3).await;
        assert_eq!(item(poll_once(&mut s).0), 0);
        // A pause (so that tonic sends item 0 now), asking to go on at once.
        let (poll, woken) = poll_once(&mut s);
        assert!(poll.is_pending(), "{poll:?}");
        assert!(woken, "a pause must wake the stream again");
        assert_eq!(item(poll_once(&mut s).0), 1);
        assert_eq!(item(poll_once(&mut s).0), 2, "later items are batched");
        assert!(matches!(poll_once(&mut s).0, Poll::Ready(None)));
    }

    #[tokio::test]
    async fn a_single_answer_goes_out_with_the_end_of_the_stream() {
        let mut s = finished_stream(1).await;
        assert_eq!(item(poll_once(&mut s).0), 0);
        assert!(matches!(poll_once(&mut s).0, Poll::Ready(None)));
        // Polling after the end stays at the end.
        assert!(poll_fn(|cx| Pin::new(&mut s).poll_next(cx)).await.is_none());
    }
}
