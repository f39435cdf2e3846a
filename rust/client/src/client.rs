//! `Client`: one connection to the server plus the attached session.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::{atomic::Ordering, Arc, Mutex},
};

use futures::{Stream, StreamExt, TryFutureExt, TryStreamExt};
use norgopolis_proto::{
    communication::{forwarder_client::ForwarderClient, Invocation, MessagePack},
    msgpack,
    v1::{
        control_client::ControlClient, ListModulesReply, ListModulesRequest, LoadReply,
        LoadRequest, PublishRequest, ShutdownRequest, StatusReply, StatusRequest, UnloadRequest,
        Welcome,
    },
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    sync::{broadcast, oneshot},
    task::JoinHandle,
};

use crate::{
    connect::find_or_spawn,
    lean::{self, LeanConn},
    transport::Connection,
    ClientError, ConnectOptions, SessionEvent, Transport, TRANSPORT_ENV,
};

/// Largest message we send or accept (call arguments, results, status).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// A stream of raw MessagePack results; dropping it cancels the call.
pub type RawCallStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ClientError>> + Send>>;
/// A stream of decoded results; dropping it cancels the call.
pub type CallStream<R> = Pin<Box<dyn Stream<Item = Result<R, ClientError>> + Send>>;

/// A connection and its attached session. Cheap to clone; the session (the
/// lease that keeps the server alive) ends when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    welcome: Welcome,
    forwarder: ForwarderClient<Connection>,
    /// Where calls go when the server speaks lean (see [`Transport`]).
    lean: Option<Arc<LeanConn>>,
    control: ControlClient<Connection>,
    events: broadcast::Sender<SessionEvent>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    attached: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The session task ends our half of the Attach stream, which is how
        // the server learns we left.
        if let Some(stop) = self.stop.get_mut().ok().and_then(Option::take) {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.inner.socket)
            .field("session_id", &self.inner.welcome.session_id)
            .field("server_pid", &self.inner.welcome.server_pid)
            .finish()
    }
}

impl Client {
    /// Finds the server (starting one if allowed and needed) and attaches.
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        let transport = match std::env::var(TRANSPORT_ENV) {
            Ok(name) if !name.is_empty() => name.parse().map_err(ClientError::BadTransport)?,
            _ => opts.transport,
        };
        let (socket, session) = find_or_spawn(&opts).await?;
        let lean = match transport {
            Transport::Grpc => None,
            Transport::Lean => {
                match lean::connect(&socket, opts.spawn_timeout, opts.server_timeout).await {
                    Ok(conn) => Some(Arc::new(conn)),
                    Err(e @ lean::LeanRefused::Untrusted(_)) => {
                        tracing::warn!("calling over gRPC: {e}");
                        None
                    }
                    Err(e) => {
                        tracing::debug!("calling over gRPC: no lean connection ({e})");
                        None
                    }
                }
            }
        };
        let channel = session.channel;
        let forwarder = ForwarderClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let control = ControlClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Client {
            inner: Arc::new(Inner {
                socket,
                welcome: session.welcome,
                forwarder,
                lean,
                control,
                events: session.events,
                stop: Mutex::new(Some(session.stop)),
                task: Mutex::new(Some(session.task)),
                attached: session.attached,
            }),
        })
    }

    /// The server's id for our session.
    pub fn session_id(&self) -> u64 {
        self.inner.welcome.session_id
    }

    /// The server's process id.
    pub fn server_pid(&self) -> u32 {
        self.inner.welcome.server_pid
    }

    /// The server's version string.
    pub fn server_version(&self) -> &str {
        &self.inner.welcome.server_version
    }

    /// The socket we are connected to.
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// Whether calls go over the lean transport (else gRPC: asked for,
    /// not spoken by the server, or the lean connection was lost while
    /// the session lives on).
    pub fn is_lean(&self) -> bool {
        self.lean().is_some()
    }

    fn lean(&self) -> Option<&Arc<LeanConn>> {
        self.inner.lean.as_ref().filter(|c| c.is_open())
    }

    /// Whether the session is still on (false after a goodbye, a lost
    /// connection or `detach`).
    pub fn is_attached(&self) -> bool {
        self.inner.attached.load(Ordering::SeqCst)
    }

    /// Raw streaming call: `args` are MessagePack bytes (empty = nil), and
    /// so is every item. Items arrive as the module produces them; dropping
    /// the stream cancels the call.
    pub async fn invoke_raw(
        &self,
        module: &str,
        function: &str,
        args: Vec<u8>,
    ) -> Result<RawCallStream, ClientError> {
        if self.is_lean() {
            return Ok(self.start_raw(module, function, args));
        }
        let data = if args.is_empty() {
            // Explicit nil: modules written against the public SDK may
            // expect `args` to be present.
            msgpack::NIL.to_vec()
        } else {
            args
        };
        let invocation = Invocation {
            module: module.to_string(),
            function_name: function.to_string(),
            args: Some(MessagePack { data }),
        };
        let stream = self
            .inner
            .forwarder
            .clone()
            .forward(invocation)
            .await?
            .into_inner();
        Ok(Box::pin(
            stream.map_ok(|m| m.data).map_err(ClientError::from),
        ))
    }

    /// Starts a raw call without waiting. Over the lean transport the call
    /// has left for the server when this returns (written from this thread,
    /// which need not be the runtime's); over gRPC it starts when the
    /// stream is first polled. Errors, including failing to start, arrive
    /// on the stream.
    pub fn start_raw(&self, module: &str, function: &str, args: Vec<u8>) -> RawCallStream {
        let args = if args.is_empty() {
            msgpack::NIL.to_vec()
        } else {
            args
        };
        let Some(conn) = self.lean() else {
            let (client, module, function) =
                (self.clone(), module.to_string(), function.to_string());
            let started = async move { client.invoke_raw(&module, &function, args).await };
            return Box::pin(started.try_flatten_stream());
        };
        if args.len() > MAX_MESSAGE_SIZE {
            let err = ClientError::Call {
                code: tonic::Code::InvalidArgument,
                message: format!(
                    "the call's arguments are {} bytes, over the limit of {MAX_MESSAGE_SIZE}",
                    args.len()
                ),
            };
            return Box::pin(futures::stream::once(async move { Err(err) }));
        }
        match lean::invoke(conn, module, function, args) {
            Ok(mut call) => Box::pin(
                futures::stream::poll_fn(move |cx| call.poll_next(cx)).map_err(ClientError::from),
            ),
            Err(err) => Box::pin(futures::stream::once(async move { Err(err) })),
        }
    }

    /// Typed streaming call: `args` are encoded as MessagePack (structs as
    /// maps), every item is decoded into `R`.
    pub async fn invoke<A: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        module: &str,
        function: &str,
        args: &A,
    ) -> Result<CallStream<R>, ClientError> {
        let bytes = msgpack::encode(args).map_err(ClientError::Encode)?;
        let raw = self.invoke_raw(module, function, bytes).await?;
        Ok(Box::pin(raw.map(|item| {
            item.and_then(|b| msgpack::decode(&b).map_err(ClientError::Decode))
        })))
    }

    /// Calls and collects every item; the first error ends the call.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        module: &str,
        function: &str,
        args: &A,
    ) -> Result<Vec<R>, ClientError> {
        self.invoke(module, function, args)
            .await?
            .try_collect()
            .await
    }

    /// The server's status, with one entry per loaded module.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        Ok(self.control().status(StatusRequest {}).await?.into_inner())
    }

    /// Modules available on disk and whether each is loaded.
    pub async fn list_modules(&self) -> Result<ListModulesReply, ClientError> {
        Ok(self
            .control()
            .list_modules(ListModulesRequest {})
            .await?
            .into_inner())
    }

    /// Loads a module by name, or from an explicit executable or folder.
    pub async fn load(&self, name: &str, path: Option<&Path>) -> Result<LoadReply, ClientError> {
        let request = LoadRequest {
            name: name.to_string(),
            path: path
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        Ok(self.control().load(request).await?.into_inner())
    }

    /// Stops a module; returns whether it was loaded.
    pub async fn unload(&self, name: &str) -> Result<bool, ClientError> {
        let request = UnloadRequest {
            name: name.to_string(),
        };
        Ok(self
            .control()
            .unload(request)
            .await?
            .into_inner()
            .was_loaded)
    }

    /// Asks the server to exit (every session gets a goodbye).
    pub async fn shutdown(&self, reason: &str) -> Result<(), ClientError> {
        let request = ShutdownRequest {
            reason: reason.to_string(),
        };
        self.control().shutdown(request).await?;
        Ok(())
    }

    /// Publishes an event (payload: MessagePack bytes) to every session;
    /// returns how many it was delivered to.
    pub async fn publish(
        &self,
        module: &str,
        topic: &str,
        payload: Vec<u8>,
    ) -> Result<u32, ClientError> {
        let request = PublishRequest {
            module: module.to_string(),
            topic: topic.to_string(),
            payload,
        };
        Ok(self
            .control()
            .publish(request)
            .await?
            .into_inner()
            .delivered)
    }

    /// Events and the server's goodbye arrive here, then `Closed`.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Ends the session now and waits until the server has seen it end.
    /// Other clones stay usable for calls, without a session.
    pub async fn detach(self) {
        let stop = self.inner.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn control(&self) -> ControlClient<Connection> {
        self.inner.control.clone()
    }
}
