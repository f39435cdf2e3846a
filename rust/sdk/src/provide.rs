//! Serving a module from a process that is already running (an external
//! module): instead of being spawned by the router, the process connects
//! to the router's socket, registers under the module's name
//! (`norgopolis_client::provide::register`), and serves calls over that
//! connection with the same lean serving loop a spawned module uses.
//!
//! ```no_run
//! use norgopolis_sdk::Module;
//!
//! # async fn demo() -> norgopolis_sdk::ProvideError {
//! Module::new("clock")
//!     .function("now", |(): ()| async move { Ok(42u64) })
//!     .provide()
//!     .await
//! # }
//! ```

use std::{
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
};

use norgopolis_client::{provide::register, ClientError, ConnectOptions};

use crate::{
    env,
    serve::ServeError,
    serve_lean::{serve_frames, Greet},
    Code, Module,
};

/// Why [`Module::provide`] returned.
#[derive(Debug, thiserror::Error)]
pub enum ProvideError {
    /// The registration failed: the socket could not be reached (or is not
    /// trusted), or the router refused the name (a [`ClientError::Call`]
    /// with its code: `AlreadyExists` when the name is taken,
    /// `InvalidArgument` for a bad name).
    #[error(transparent)]
    Register(#[from] ClientError),
    /// The router closed the connection (the module was unloaded, or the
    /// server exited).
    #[error("the router closed the connection of module '{0}' (unloaded, or the server exited)")]
    Closed(String),
    /// Serving failed (the router broke the protocol, or the socket failed).
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ProvideError {
    /// The router's error code when it refused the registration.
    pub fn refused(&self) -> Option<Code> {
        match self {
            ProvideError::Register(ClientError::Call { code, .. }) => Some(*code),
            _ => None,
        }
    }
}

/// Where [`Module::provide`] connects: `$NORGOPOLIS_SOCKET`, else the
/// runtime dir's socket (the rule every client follows). It never starts
/// a server: an external module serves a router that runs.
pub fn provide_options() -> ConnectOptions {
    let options = ConnectOptions::new("provider").spawn(false);
    match env::socket_path() {
        Some(socket) => options.socket(socket),
        None => options,
    }
}

impl Module {
    /// Registers this module, under its name, with the running router and
    /// serves its calls over the router's socket until the connection
    /// ends; returns why it ended. Callers reach it like any module; the
    /// router never starts or stops this process (`unload` closes the
    /// connection). The socket is [`provide_options`]'.
    pub async fn provide(self) -> ProvideError {
        let served = self
            .provide_until(provide_options(), std::future::pending())
            .await;
        match served {
            Ok(()) => ProvideError::Closed(String::new()),
            Err(err) => err,
        }
    }

    /// [`Module::provide`] at `options`' socket, also ending (`Ok`, calls
    /// in flight dropped, the name freed) when `shutdown` resolves.
    pub async fn provide_until<S>(
        self,
        options: ConnectOptions,
        shutdown: S,
    ) -> Result<(), ProvideError>
    where
        S: Future<Output = ()>,
    {
        let name = self.name().to_owned();
        let functions = self.function_names().map(str::to_owned).collect();
        let registered = register(&options, &name, functions).await?;
        tracing::info!(
            module = %name,
            socket = %registered.socket.display(),
            "registered as an external module"
        );
        // Serving ends without an error both when the router closes the
        // connection and when `shutdown` resolves; only the first is news.
        let stopped = AtomicBool::new(false);
        let shutdown = async {
            shutdown.await;
            stopped.store(true, Ordering::Relaxed);
        };
        let registry = self.into_registry();
        serve_frames(
            registry,
            registered.frames,
            registered.writer,
            shutdown,
            Greet::No,
        )
        .await?;
        if stopped.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(ProvideError::Closed(name))
        }
    }
}
