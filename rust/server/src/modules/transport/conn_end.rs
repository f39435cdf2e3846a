//! What both transports share: how a module connection is pinged, the
//! task that drives it, and how it ended.

use std::{future::Future, pin::Pin, time::Duration};

/// How a module connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEnd {
    /// We closed it (stopping the module).
    Asked,
    /// The module closed its stdout or the pipe broke: usually it is exiting.
    Closed(String),
    /// The module sent bytes that are not valid HTTP/2.
    Broken(String),
    /// A ping went unanswered for the keep-alive timeout.
    Unanswered,
    /// Our HTTP/2 stack refused to buffer more of the module's small frames.
    Flooded(String),
    /// The module sent bytes that are not valid lean frames.
    Garbled(String),
}

/// The connection task's future: drives the connection, tells how it ended.
pub type ConnTask = Pin<Box<dyn Future<Output = ConnEnd> + Send + 'static>>;

/// Ping settings for module connections.
#[derive(Debug, Clone, Copy)]
pub struct Ping {
    /// How often an idle connection is pinged.
    pub interval: Duration,
    /// How long a ping may go unanswered.
    pub timeout: Duration,
}
