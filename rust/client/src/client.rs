//! `Client`: one connection to the server plus the attached session.
//!
//! The session is replaced in one case only: the server retires for a
//! newer norgopolis (the upgrade handover, see `connect.rs`). A client
//! whose session ended with the retiring goodbye, or whose call was refused
//! as "retiring, not run", attaches again (to the newer server, which the
//! client that asked for the handover starts under the spawn lock) and
//! sends that call again; only calls the server refused before running
//! them are sent twice. Any other loss of the server stays an error, as
//! `http2.rs` explains.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
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
    http2::Connection,
    lean_conn::{self, LeanConn},
    limits::MAX_MESSAGE_SIZE,
    ClientError, ConnectOptions, SessionEvent, Transport, TRANSPORT_ENV,
};

/// A stream of raw MessagePack results; dropping it cancels the call.
pub type RawCallStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ClientError>> + Send>>;
/// A stream of decoded results; dropping it cancels the call.
pub type CallStream<R> = Pin<Box<dyn Stream<Item = Result<R, ClientError>> + Send>>;

/// How many times one call is sent again after "retiring, not run"
/// refusals: a handover needs one; more would mean servers retiring in a
/// loop, which must end in an error rather than go on.
const MAX_RESENDS: usize = 2;

/// A connection and its attached session. Cheap to clone; the session (the
/// lease that keeps the server alive) ends when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// What stays when the session is replaced after a handover.
struct Shared {
    opts: ConnectOptions,
    transport: Transport,
    socket: PathBuf,
    session: Mutex<Arc<Inner>>,
    /// Held while attaching again, so concurrent calls share one attach.
    reattaching: tokio::sync::Mutex<()>,
    /// Set by `detach`: no session is made again.
    detached: AtomicBool,
}

struct Inner {
    welcome: Welcome,
    forwarder: ForwarderClient<Connection>,
    /// Where calls go when the server speaks lean (see [`Transport`]).
    lean: Option<Arc<LeanConn>>,
    control: ControlClient<Connection>,
    events: broadcast::Sender<SessionEvent>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    attached: Arc<AtomicBool>,
    /// The server retired (said so in its goodbye, or refused a call as
    /// retiring): the next call attaches again.
    retired: Arc<AtomicBool>,
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
        let inner = self.current();
        f.debug_struct("Client")
            .field("socket", &self.shared.socket)
            .field("session_id", &inner.welcome.session_id)
            .field("server_pid", &inner.welcome.server_pid)
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
        let (socket, inner) = Inner::connect(&opts, transport).await?;
        Ok(Client {
            shared: Arc::new(Shared {
                opts,
                transport,
                socket,
                session: Mutex::new(Arc::new(inner)),
                reattaching: tokio::sync::Mutex::new(()),
                detached: AtomicBool::new(false),
            }),
        })
    }

    /// The session calls go to now.
    fn current(&self) -> Arc<Inner> {
        self.shared
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The session to call on: the current one, or a new one if the server
    /// retired.
    async fn live(&self) -> Result<Arc<Inner>, ClientError> {
        let inner = self.current();
        if !inner.retired.load(Ordering::SeqCst) || self.shared.detached.load(Ordering::SeqCst) {
            return Ok(inner);
        }
        let _one = self.shared.reattaching.lock().await;
        let now = self.current();
        if !Arc::ptr_eq(&now, &inner) {
            // Another call attached again meanwhile.
            return Ok(now);
        }
        tracing::debug!(
            server_pid = inner.welcome.server_pid,
            "the server retired for a newer norgopolis; attaching again"
        );
        let (_, fresh) = Inner::connect(&self.shared.opts, self.shared.transport).await?;
        let fresh = Arc::new(fresh);
        *self
            .shared
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// This client's identity (shared by its clones), which does not keep
    /// it alive.
    pub fn identity(&self) -> ClientIdentity {
        ClientIdentity(Arc::downgrade(&self.shared))
    }
}

/// Tells one client (all clones of one [`Client::connect`]) from others
/// without keeping its session alive; its session id does not, as a client
/// moves to a new session when its server retires.
#[derive(Clone)]
pub struct ClientIdentity(std::sync::Weak<Shared>);

impl ClientIdentity {
    /// Whether `client` is the client this identity was taken from.
    pub fn is(&self, client: &Client) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&client.shared))
    }
}

impl Inner {
    /// Finds or starts the server and attaches; opens the lean connection
    /// if asked for.
    async fn connect(
        opts: &ConnectOptions,
        transport: Transport,
    ) -> Result<(PathBuf, Inner), ClientError> {
        let (socket, session) = find_or_spawn(opts).await?;
        let lean = match transport {
            Transport::Grpc => None,
            Transport::Lean => {
                match lean_conn::connect(&socket, opts.spawn_timeout, opts.server_timeout).await {
                    Ok(conn) => Some(Arc::new(conn)),
                    Err(e @ lean_conn::LeanRefused::Untrusted(_)) => {
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
        Ok((
            socket,
            Inner {
                welcome: session.welcome,
                forwarder,
                lean,
                control,
                events: session.events,
                stop: Mutex::new(Some(session.stop)),
                task: Mutex::new(Some(session.task)),
                attached: session.attached,
                retired: session.retired,
            },
        ))
    }

    fn lean(&self) -> Option<&Arc<LeanConn>> {
        self.lean.as_ref().filter(|c| c.is_open())
    }

    /// Starts a raw call on this session (see [`Client::start_raw`]).
    fn start_raw(&self, module: &str, function: &str, args: Vec<u8>) -> RawCallStream {
        let Some(conn) = self.lean() else {
            let invocation = Invocation {
                module: module.to_string(),
                function_name: function.to_string(),
                args: Some(MessagePack { data: args }),
            };
            let mut forwarder = self.forwarder.clone();
            let started = async move {
                let stream = forwarder.forward(invocation).await?.into_inner();
                Ok::<_, ClientError>(stream.map_ok(|m| m.data).map_err(ClientError::from))
            };
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
        match lean_conn::invoke(conn, module, function, args) {
            Ok(mut call) => Box::pin(
                futures::stream::poll_fn(move |cx| call.poll_next(cx)).map_err(ClientError::from),
            ),
            Err(err) => Box::pin(futures::stream::once(async move { Err(err) })),
        }
    }
}

/// Whether a call's error is a retiring server's refusal: the call was not
/// run and may be sent to the successor.
fn refused_as_retiring(e: &ClientError) -> bool {
    matches!(e, ClientError::Call { code: tonic::Code::Unavailable, message }
        if norgopolis_common::version::is_retiring(message))
}

impl Client {
    /// The server's id for our session.
    pub fn session_id(&self) -> u64 {
        self.current().welcome.session_id
    }

    /// The server's process id.
    pub fn server_pid(&self) -> u32 {
        self.current().welcome.server_pid
    }

    /// The server's version string.
    pub fn server_version(&self) -> String {
        self.current().welcome.server_version.clone()
    }

    /// The socket we are connected to.
    pub fn socket(&self) -> &Path {
        &self.shared.socket
    }

    /// Whether calls go over the lean transport (else gRPC: asked for,
    /// not spoken by the server, or the lean connection was lost while
    /// the session lives on).
    pub fn is_lean(&self) -> bool {
        self.current().lean().is_some()
    }

    /// Whether the session is still on (false after a goodbye, a lost
    /// connection or `detach`; after a retiring server's goodbye, the next
    /// call attaches again).
    pub fn is_attached(&self) -> bool {
        self.current().attached.load(Ordering::SeqCst)
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
        if self.current().lean().is_some() {
            return Ok(self.start_raw(module, function, args));
        }
        // Over gRPC a call that fails to start fails here.
        let args = msgpack::args_or_nil(args);
        let invocation = Invocation {
            module: module.to_string(),
            function_name: function.to_string(),
            args: Some(MessagePack { data: args }),
        };
        let mut resends = 0;
        loop {
            let inner = self.live().await?;
            match inner.forwarder.clone().forward(invocation.clone()).await {
                Ok(stream) => {
                    let stream = stream.into_inner();
                    return Ok(Box::pin(
                        stream.map_ok(|m| m.data).map_err(ClientError::from),
                    ));
                }
                Err(status) => {
                    let e = ClientError::from(status);
                    if !refused_as_retiring(&e) || resends == MAX_RESENDS {
                        return Err(e);
                    }
                    resends += 1;
                    inner.retired.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Starts a raw call without waiting. Over the lean transport the call
    /// has left for the server when this returns (written from this thread,
    /// which need not be the runtime's); over gRPC it starts when the
    /// stream is first polled. Errors, including failing to start, arrive
    /// on the stream. A call a retiring server refused (not run) is sent
    /// again on a new session, at most [`MAX_RESENDS`] times.
    pub fn start_raw(&self, module: &str, function: &str, args: Vec<u8>) -> RawCallStream {
        let args = msgpack::args_or_nil(args);
        let inner = self.current();
        // Kept for sending again; a retiring server is rare, a copy cheap
        // next to sending the arguments at all.
        let again = args.clone();
        let first = if inner.retired.load(Ordering::SeqCst) {
            None
        } else {
            Some(inner.start_raw(module, function, args))
        };
        let (client, module, function) = (self.clone(), module.to_string(), function.to_string());
        let resolved = async move {
            let mut stream = match first {
                Some(stream) => stream,
                None => match client.live().await {
                    Ok(inner) => inner.start_raw(&module, &function, again.clone()),
                    Err(e) => return error_stream(e),
                },
            };
            let mut resends = 0;
            loop {
                match stream.next().await {
                    Some(Err(e)) if refused_as_retiring(&e) && resends < MAX_RESENDS => {
                        resends += 1;
                        client.current().retired.store(true, Ordering::SeqCst);
                        match client.live().await {
                            Ok(inner) => {
                                stream = inner.start_raw(&module, &function, again.clone())
                            }
                            Err(e) => return error_stream(e),
                        }
                    }
                    Some(item) => {
                        let first = futures::stream::once(async move { item });
                        return Box::pin(first.chain(stream)) as RawCallStream;
                    }
                    None => return Box::pin(futures::stream::empty()) as RawCallStream,
                }
            }
        };
        Box::pin(futures::stream::once(resolved).flatten())
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
    /// A subscription follows one session: after a handover it ends with
    /// the retiring goodbye and `Closed`, and a new subscription follows the
    /// new session.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.current().events.subscribe()
    }

    /// Ends the session now and waits until the server has seen it end.
    /// Other clones stay usable for calls, without a session.
    pub async fn detach(self) {
        self.shared.detached.store(true, Ordering::SeqCst);
        let inner = self.current();
        let stop = inner.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn control(&self) -> ControlClient<Connection> {
        self.current().control.clone()
    }
}

/// A call stream that fails at once with `e`.
fn error_stream(e: ClientError) -> RawCallStream {
    Box::pin(futures::stream::once(async move { Err(e) }))
}
