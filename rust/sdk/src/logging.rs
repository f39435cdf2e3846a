//! Logging for modules: stderr only.
//!
//! stdout carries the protocol, so nothing else may go there; the router
//! reads each stderr line into its own log, prefixed with the module's name.
//! [`crate::Module::run`] calls [`init_logging`] unless a `tracing`
//! subscriber is already installed, so plain `tracing::info!` works.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber that writes plain lines (no colours, no
/// timestamps: the router adds its own) to stderr. The level comes from
/// `RUST_LOG` and defaults to `info`. Does nothing if a subscriber is
/// already installed.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        // Reporting a failed write would itself write to stderr, and
        // `eprintln!` panics when the router has closed it.
        .log_internal_errors(false)
        .try_init();
}
