//! Rust client for norgopolis.
//!
//! [`Client::connect`] finds the per-user server (starting one, detached,
//! if none answers — exactly one however many clients start at once),
//! attaches a session that keeps it alive while the client lives, and then
//! offers streaming calls to modules ([`Client::invoke`]) and the control
//! calls (status, load, unload, shutdown, publish). Arguments and results
//! are serde values carried as MessagePack (structs as maps).
//!
//! The client runs on the tokio runtime it is called from, which needs its
//! IO and time drivers (`enable_all`); it spawns one task per session there
//! (keepalive and events). It never installs a SIGCHLD handler: the
//! server's short-lived parent is reaped on a plain thread, so hosts with
//! their own child handling (Neovim's libuv) are not disturbed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), norgopolis_client::ClientError> {
//! use norgopolis_client::{Client, ConnectOptions};
//! let client = Client::connect(ConnectOptions::new("rust")).await?;
//! let echoed: Vec<String> = client.call("echo", "echo", &"hello").await?;
//! # Ok(()) }
//! ```

mod body;
mod client;
mod connect;
mod error;
mod exit;
mod http2;
mod lean_conn;
mod lean_writer;
mod limits;
mod options;
pub mod provide;
mod readiness;
mod session;
mod spawn;
mod trust;

pub use client::{CallStream, Client, ClientIdentity, RawCallStream};
pub use error::{code_name, ClientError};
pub use exit::wait_for_server_exit;
pub use limits::MAX_MESSAGE_SIZE;
pub use norgopolis_catalog::server_binary::{find_server_binary, SERVER_BINARY_NAME};
pub use norgopolis_proto::v1::{
    Event, ListModulesReply, LoadReply, ModuleInfo, ModuleStatus, StatusReply,
};
pub use norgopolis_proto::PROTOCOL_VERSION;
pub use options::{ConnectOptions, Transport, TRANSPORT_ENV};
pub use session::SessionEvent;
/// The gRPC status code type used in [`ClientError::Call`].
pub use tonic::Code;
pub use trust::open_socket;
