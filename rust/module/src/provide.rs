//! Serving a module from a process that is already running (an external
//! module): instead of being spawned by the router, the process connects
//! to the router's socket, registers under the module's name with a
//! `PROVIDE` frame, and serves calls over that connection until it ends.
//!
//! ```no_run
//! use norgopolis_sdk::Module;
//!
//! # async fn demo() -> norgopolis_sdk::ProvideError {
//! let served = Module::new("clock")
//!     .function("now", |(): ()| async move { Ok(42u64) })
//!     .provide()
//!     .await;
//! served.unwrap_err()
//! # }
//! ```

use std::{
    future::Future,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

use norgopolis_client::{open_socket, ClientError, ConnectOptions};
use norgopolis_proto::lean::{self, Frame, FrameError, FrameReader, Incoming};
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::{
    env,
    lean::{serve_frames, Greet},
    serve::ServeError,
    Code, Module,
};

/// The id of the `PROVIDE` frame (any id would do: nothing else is in
/// flight on the connection yet).
const PROVIDE_ID: u32 = 1;

/// Why [`Module::provide`] returned.
#[derive(Debug, thiserror::Error)]
pub enum ProvideError {
    /// The router's socket could not be reached (or is not trusted).
    #[error("cannot reach the norgopolis router: {0}")]
    Connect(#[from] ClientError),
    /// The router refused the registration (the name is taken:
    /// `AlreadyExists`; a bad name: `InvalidArgument`).
    #[error("the router refused to register module '{module}': {}: {message}", norgopolis_client::code_name(*code))]
    Refused {
        /// The module name asked for.
        module: String,
        /// The router's error code.
        code: Code,
        /// The router's message.
        message: String,
    },
    /// The router did not answer as the protocol says.
    #[error("the router answered PROVIDE unexpectedly: {0}")]
    Handshake(String),
    /// The router closed the connection (the module was unloaded, or the
    /// server exited).
    #[error("the router closed the connection of module '{0}' (unloaded, or the server exited)")]
    Closed(String),
    /// Serving failed (the router broke the protocol, or the socket failed).
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ProvideError {
    /// The router's error code, for a refusal.
    pub fn code(&self) -> Option<Code> {
        match self {
            ProvideError::Refused { code, .. } => Some(*code),
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
        match self
            .provide_until(provide_options(), std::future::pending())
            .await
        {
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
        let (socket, stream) = open_socket(&options).await?;
        let (reader, mut writer) = stream.into_split();
        let mut opening = lean::hello_bytes().to_vec();
        let provide = Frame::Provide {
            id: PROVIDE_ID,
            module: name.clone(),
            functions: self.function_names().map(str::to_owned).collect(),
        };
        lean::encode(&provide, &mut opening)
            .map_err(|e| ProvideError::Handshake(format!("cannot encode PROVIDE: {e}")))?;
        writer
            .write_all(&opening)
            .await
            .map_err(|e| closed_early(&socket, e))?;
        let mut frames = FrameReader::new(reader, u32::MAX as usize);
        let greeting = next(&mut frames, &socket).await?;
        if greeting != Frame::Hello {
            return Err(ProvideError::Handshake(format!(
                "a {} frame instead of its HELLO",
                greeting.kind_name()
            )));
        }
        match next(&mut frames, &socket).await? {
            Frame::End { id: PROVIDE_ID } => {}
            Frame::Error {
                id: PROVIDE_ID,
                code,
                message,
            } => {
                return Err(ProvideError::Refused {
                    module: name,
                    code: Code::from_i32(code),
                    message,
                })
            }
            other => {
                return Err(ProvideError::Handshake(format!(
                    "a {} frame instead of END or ERROR",
                    other.kind_name()
                )))
            }
        }
        tracing::info!(module = %name, socket = %socket.display(), "registered as an external module");
        // Serving ends without an error both when the router closes the
        // connection and when `shutdown` resolves; only the first is news.
        let stopped = AtomicBool::new(false);
        let shutdown = async {
            shutdown.await;
            stopped.store(true, Ordering::Relaxed);
        };
        serve_frames(self.into_registry(), frames, writer, shutdown, Greet::No).await?;
        if stopped.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(ProvideError::Closed(name))
        }
    }
}

fn closed_early(socket: &std::path::Path, e: std::io::Error) -> ProvideError {
    ProvideError::Connect(ClientError::Connect {
        socket: PathBuf::from(socket),
        source: e,
    })
}

/// The router's next frame during the handshake.
async fn next<R: AsyncRead + Unpin>(
    frames: &mut FrameReader<R>,
    socket: &std::path::Path,
) -> Result<Frame, ProvideError> {
    match frames.next().await {
        Ok(Some(Incoming::Frame(frame))) => Ok(frame),
        Ok(Some(Incoming::Oversized { .. })) => {
            Err(ProvideError::Handshake("an oversized frame".into()))
        }
        Ok(None) | Err(FrameError::Truncated) => Err(closed_early(
            socket,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the router closed the connection during the handshake",
            ),
        )),
        Err(FrameError::Io(e)) => Err(closed_early(socket, e)),
        Err(e) => Err(ProvideError::Handshake(e.to_string())),
    }
}
