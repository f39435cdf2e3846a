//! The limits' defaults and the ranges the config file accepts for them:
//! one home that the settings, the config file and the module host all
//! read.

/// Defaults of the limits, documented in the README.
pub mod defaults {
    use std::time::Duration;

    /// `max_message_size`.
    pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
    /// `max_sessions`.
    pub const MAX_SESSIONS: u32 = 256;
    /// `max_calls_per_session`.
    pub const MAX_CALLS_PER_SESSION: u32 = 256;
    /// `max_calls_per_module`.
    pub const MAX_CALLS_PER_MODULE: u32 = 128;
    /// `module_grace`.
    pub const MODULE_GRACE: Duration = Duration::from_millis(1500);
    /// `module_ping_interval`.
    pub const MODULE_PING_INTERVAL: Duration = Duration::from_secs(10);
    /// `module_ping_timeout`.
    pub const MODULE_PING_TIMEOUT: Duration = Duration::from_secs(20);
    /// `log_max_size`.
    pub const LOG_MAX_SIZE: u64 = 8 * 1024 * 1024;
    /// `stderr_lines_per_second`.
    pub const STDERR_LINES_PER_SECOND: u32 = 100;
    /// `max_connections` (the Unix socket; two per front end).
    pub const MAX_CONNECTIONS: u32 = 1024;
    /// `max_tcp_connections`: far below the socket's, as any local user
    /// can connect.
    pub const MAX_TCP_CONNECTIONS: u32 = 64;
    /// `first_call_timeout`.
    pub const FIRST_CALL_TIMEOUT: Duration = Duration::from_secs(60);
    /// `stall_timeout`: a hung editor is given a while to come back.
    pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
}

/// Accepted ranges of the connection limits.
pub mod ranges {
    use std::{ops::RangeInclusive, time::Duration};

    /// `max_connections`: the owner's own tools need a few.
    pub const MAX_CONNECTIONS: RangeInclusive<u32> = 16..=1_048_576;
    /// `max_tcp_connections`.
    pub const MAX_TCP_CONNECTIONS: RangeInclusive<u32> = 1..=65_536;
    /// `first_call_timeout`: long enough to connect and call.
    pub const FIRST_CALL_TIMEOUT: RangeInclusive<Duration> =
        Duration::from_millis(100)..=Duration::from_secs(3600);
}
