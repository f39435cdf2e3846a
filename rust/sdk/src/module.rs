//! The module builder: name, functions, and serving them.

use std::{collections::BTreeMap, future::Future, process::ExitCode, sync::Arc};

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    handler::Function,
    serve::{serve_connection, ServeError},
    service::Registry,
    stdio, Emitter, Error,
};

/// A norgopolis module: a name and a table of functions, served to the
/// router over stdin/stdout.
///
/// ```no_run
/// use norgopolis_sdk::{Emitter, Module};
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     Module::new("hello")
///         .function("greet", |name: String| async move { Ok(format!("Hello, {name}!")) })
///         .stream("count", |n: u64, out: Emitter| async move {
///             for i in 0..n {
///                 out.send(&i).await?;
///             }
///             Ok(())
///         })
///         .run()
///         .await
/// }
/// ```
pub struct Module {
    name: String,
    functions: BTreeMap<String, Function>,
}

impl Module {
    /// A module without functions yet. `name` appears in error messages.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            functions: BTreeMap::new(),
        }
    }

    /// The module's name, as given to [`Module::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Names of the registered functions, sorted.
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    /// Registers a function answering with one value.
    ///
    /// The arguments are decoded into `A` with serde (use `()` or
    /// `Option<T>` for functions callable without arguments, and
    /// `rmpv::Value` to take anything); if they do not fit, the caller gets
    /// `InvalidArgument` naming the function and the expected shape. The
    /// result is encoded with serde, structs as maps.
    ///
    /// # Panics
    /// If `name` is already registered: that is a bug in the module.
    pub fn function<A, R, F, Fut>(self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
    {
        self.register(name, Function::plain(handler))
    }

    /// Registers a function streaming any number of values through an
    /// [`Emitter`]; each one reaches the caller as soon as it is sent.
    ///
    /// Arguments are decoded as for [`Module::function`]. An error returned
    /// after some items reaches the caller after those items. When the
    /// caller goes away the handler's future is dropped (and sends fail in
    /// the meantime).
    ///
    /// # Panics
    /// If `name` is already registered: that is a bug in the module.
    pub fn stream<A, F, Fut>(self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A, Emitter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.register(name, Function::streaming(handler))
    }

    /// Replaces the argument description shown when a call's arguments do
    /// not fit (by default the Rust type's name), e.g.
    /// `"n | {n, delay_ms?}"`.
    ///
    /// # Panics
    /// If `function` is not registered yet: that is a bug in the module.
    pub fn describe_args(mut self, function: &str, shape: impl Into<String>) -> Self {
        match self.functions.get_mut(function) {
            Some(f) => f.shape = shape.into(),
            None => panic!(
                "describe_args: module '{}' has no function '{function}'",
                self.name
            ),
        }
        self
    }

    fn register(mut self, name: &str, function: Function) -> Self {
        if self.functions.insert(name.to_owned(), function).is_some() {
            panic!("module '{}' registers function '{name}' twice", self.name);
        }
        self
    }

    /// Serves the router on stdin/stdout until stdin reaches EOF (the
    /// router's way of asking a module to stop) or SIGTERM/SIGINT arrives,
    /// then returns success; calls still running are cancelled.
    ///
    /// Speaks gRPC, or the lean transport when the router asks for it
    /// (`NORGOPOLIS_TRANSPORT=lean`).
    ///
    /// Before serving, fd 1 is pointed at stderr (see the crate docs on
    /// logging) and a stderr logger is installed if none is.
    pub async fn run(self) -> ExitCode {
        if !tracing::dispatcher::has_been_set() {
            crate::init_logging();
        }
        let name = self.name.clone();
        let stdio = match stdio::take() {
            Ok(stdio) => stdio,
            Err(err) => {
                tracing::error!(module = %name, "{}", ServeError::Stdio(err));
                return ExitCode::FAILURE;
            }
        };
        // On a task, not in `block_on`: a multi-threaded runtime then runs
        // the connection on the worker that is woken by its I/O, instead
        // of handing every read and call over to the main thread and back
        // (about 3 instead of 8 thread switches per call, `make bench`).
        let lean = std::env::var(norgopolis_common::places::TRANSPORT_ENV)
            .is_ok_and(|t| t == norgopolis_proto::lean_frame::TRANSPORT_LEAN);
        let served = if lean {
            tokio::spawn(self.serve_lean_io_until(stdio.reader, stdio.writer, termination()))
        } else {
            tokio::spawn(self.serve_io_until(stdio.reader, stdio.writer, termination()))
        };
        match served.await {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(err)) => {
                tracing::error!(module = %name, "{err}");
                ExitCode::FAILURE
            }
            Err(err) => {
                tracing::error!(module = %name, "serving the router failed: {err}");
                ExitCode::FAILURE
            }
        }
    }

    /// Serves one router connection over `reader` and `writer` until the
    /// reader reaches EOF. For tests (over `tokio::io::duplex`) and for
    /// embedding; [`Module::run`] uses stdin/stdout.
    pub async fn serve_io<R, W>(self, reader: R, writer: W) -> Result<(), ServeError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_io_until(reader, writer, std::future::pending())
            .await
    }

    /// Like [`Module::serve_io`], but also stops (dropping calls in flight)
    /// when `shutdown` resolves.
    pub async fn serve_io_until<R, W, S>(
        self,
        reader: R,
        writer: W,
        shutdown: S,
    ) -> Result<(), ServeError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
        S: Future<Output = ()>,
    {
        serve_connection(self.into_registry(), reader, writer, shutdown).await
    }

    /// Like [`Module::serve_io_until`], over the lean transport
    /// (`norgopolis_proto::lean_frame`) instead of gRPC: what [`Module::run`]
    /// does when the router asks for it. For tests and embedding.
    pub async fn serve_lean_io_until<R, W, S>(
        self,
        reader: R,
        writer: W,
        shutdown: S,
    ) -> Result<(), ServeError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
        S: Future<Output = ()>,
    {
        crate::serve_lean::serve_lean(self.into_registry(), reader, writer, shutdown).await
    }

    /// The functions as served, whichever the transport.
    pub(crate) fn into_registry(self) -> Arc<Registry> {
        Arc::new(Registry {
            name: self.name,
            functions: self.functions,
        })
    }
}

/// Resolves on SIGTERM (the router's last resort after closing stdin) or
/// SIGINT (Ctrl-C reaching a router run in a terminal).
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::debug!("SIGTERM: stopping"),
                _ = int.recv() => tracing::debug!("SIGINT: stopping"),
            }
        }
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!("cannot watch for SIGTERM/SIGINT: {err}");
            std::future::pending::<()>().await
        }
    }
}
