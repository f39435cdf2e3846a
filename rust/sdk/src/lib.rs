//! Write norgopolis modules in a few lines.
//!
//! A module is an executable the norgopolis router starts and talks to over
//! the module's stdin and stdout with gRPC
//! (`module_communication.Invoker/Invoke`), exactly as modules built on the
//! public `norgopolis-module` 2.x crate do, so either kind works with either
//! router. Arguments and results are MessagePack; this crate decodes and
//! encodes them with serde.
//!
//! ```no_run
//! use norgopolis_sdk::{Code, Emitter, Error, Module};
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     Module::new("demo")
//!         // One result; `rmpv::Value` takes any argument.
//!         .function("echo", |v: rmpv::Value| async move { Ok(v) })
//!         // Any number of results, each sent to the caller as produced.
//!         .stream("count", |n: u64, out: Emitter| async move {
//!             for i in 0..n {
//!                 out.send(&i).await?; // fails once the caller went away
//!             }
//!             Ok(())
//!         })
//!         // Errors carry a gRPC code to the caller.
//!         .function("nope", |(): ()| async move {
//!             Err::<(), _>(Error::new(Code::Unimplemented, "not yet"))
//!         })
//!         .run() // until stdin closes or SIGTERM; exit code 0
//!         .await
//! }
//! ```
//!
//! # Calls
//! Each call runs in its own tokio task, so calls run concurrently. Unknown
//! functions answer `NotFound` listing the functions the module has;
//! arguments that do not decode answer `InvalidArgument` naming the
//! function and the expected shape; a panicking handler answers `Internal`
//! and leaves the module running. When the caller cancels, the handler's
//! future is dropped.
//!
//! # Runtime
//! A module serves one connection, so `#[tokio::main(flavor =
//! "current_thread")]` is the cheapest runtime for it: no call is ever
//! handed between threads (on the 2-core benchmark machine about 1.5
//! instead of 3 thread switches and a tenth less CPU per call than the
//! default multi-threaded runtime; `make bench`). Keep the multi-threaded
//! one for handlers that compute in parallel.
//!
//! # Logging
//! stdout belongs to the protocol. [`Module::run`] points fd 1 at stderr so
//! that a stray `println!` cannot corrupt it, and installs a `tracing`
//! subscriber writing to stderr ([`init_logging`]) unless one is set. The
//! router copies every stderr line into its log, prefixed with the module's
//! name, so `tracing::info!` or `eprintln!` is all a module needs.
//!
//! # Transport
//! gRPC unless the router asks for the lean transport at spawn
//! (`NORGOPOLIS_TRANSPORT=lean`, set when the module's `module.toml` says
//! `transport = "lean"`): length-prefixed MessagePack frames on the same
//! stdin/stdout, without HTTP/2 (on the 2-core benchmark machine a routed
//! 64-byte echo took about 40 instead of 100 µs of the module's CPU and a
//! third less in all; `make bench`). Handlers do not notice which one
//! carries their calls.
//!
//! # Environment
//! The router tells a module its name and the router socket ([`env`](mod@env)); a
//! module uses the socket to call other modules and publish events
//! ([`router`], [`publish`]) like any client, without keeping the router
//! alive. Its configuration, the `[modules.NAME]` table of the router's
//! `config.toml`, arrives as JSON in `NORGOPOLIS_MODULE_CONFIG`;
//! [`module_config`] decodes it into any serde type.

#![warn(missing_docs)]

mod codec;
mod config;
mod conn_probe;
mod emitter;
pub mod env;
mod error;
mod handler;
mod logging;
mod module;
mod pacing;
mod provide;
mod router;
mod serve;
mod serve_lean;
mod service;
mod stdio;
mod stream_probe;
pub mod testing;

pub use config::{module_config, module_config_value, MODULE_CONFIG_ENV};
pub use emitter::Emitter;
pub use error::{Code, Error};
pub use logging::init_logging;
pub use module::Module;
pub use provide::{provide_options, ProvideError};
pub use router::{publish, router, router_options, Client, ClientError};
pub use serve::ServeError;

/// Re-exported so modules can name dynamic values without another
/// dependency line.
pub use rmpv;
