//! Command line and the effective settings (flags over environment over
//! config file over defaults).

use std::{net::SocketAddr, os::fd::RawFd, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use norgopolis_catalog::dirs::{self, ConfigDirs};
// The duration rules live in `norgopolis_common::duration`, shared with
// `module.toml` (read through `norgopolis-catalog`).
use norgopolis_common::{
    duration::{parse_duration, parse_positive_duration},
    places, Places,
};

use crate::{
    config::file::Config,
    config::limits::defaults,
    config::listen_addr::parse_loopback,
    config::module_config::{parse_module_config_arg, ModuleConfigArg, ModuleConfigs},
};

/// Command-line flags of `norgopolis-server`.
#[derive(Debug, Parser)]
#[command(name = "norgopolis-server", disable_version_flag = true)]
#[command(about = "Per-user router daemon for native Neorg modules")]
pub struct Args {
    /// Print the version and exit.
    #[arg(long, short = 'V')]
    pub version: bool,
    /// Stay in the foreground and log to stderr.
    #[arg(long)]
    pub foreground: bool,
    /// Socket path (default: $NORGOPOLIS_SOCKET, else the per-user runtime dir).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Modules directory, searched in order (repeatable).
    #[arg(long = "modules-dir", visible_alias = "path", value_name = "DIR")]
    pub modules_dirs: Vec<PathBuf>,
    /// Modules directory searched after all others, whichever rule chose
    /// those (repeatable; front ends pass their bundled modules here).
    #[arg(long = "fallback-modules-dir", value_name = "DIR")]
    pub fallback_modules_dirs: Vec<PathBuf>,
    /// Check the config file and settings, print what they resolve to (the
    /// socket, and one `modules dir: DIR` line per dir searched, in order),
    /// and exit (status 1 with the error naming file, line and key).
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// Exit this long after the last session leaves ("20ms", "3s", or seconds).
    #[arg(long, value_parser = parse_duration)]
    pub linger: Option<Duration>,
    /// A server that never had a session exits after this long without calls.
    #[arg(long = "idle-timeout", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Write "ready <pid>" or "error <message>" to this fd once listening.
    #[arg(long = "ready-fd")]
    pub ready_fd: Option<RawFd>,
    /// Log file (used when not in the foreground).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Config file (default: $XDG_CONFIG_HOME/norgopolis/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long to wait for an exiting server to release the socket.
    #[arg(long = "lock-wait", value_parser = parse_duration, hide = true)]
    pub lock_wait: Option<Duration>,
    /// How often clients are asked to ping (tests shorten it).
    #[arg(long = "keepalive-interval", value_parser = parse_positive_duration, hide = true)]
    pub keepalive_interval: Option<Duration>,
    /// A session silent for this long is dropped (default 3 keepalive intervals).
    #[arg(long = "client-timeout", value_parser = parse_positive_duration, hide = true)]
    pub client_timeout: Option<Duration>,
    /// First delay of the `on-failure` restart backoff (tests shorten it).
    #[arg(long = "restart-backoff", value_parser = parse_duration, hide = true)]
    pub restart_backoff: Option<Duration>,
    /// Also serve the public protocol (communication.Forwarder only) on this
    /// loopback TCP address, for clients that speak host and port
    /// ("127.0.0.1:62020"). Every local user can reach it.
    #[arg(long = "listen-tcp", value_name = "ADDR", value_parser = parse_loopback)]
    pub listen_tcp: Option<SocketAddr>,
    /// Configuration for module NAME as a JSON object, merged over its
    /// `[modules.NAME]` table in the config file (repeatable).
    #[arg(long = "module-config", value_name = "NAME=JSON", value_parser = parse_module_config_arg)]
    pub module_configs: Vec<ModuleConfigArg>,
    /// Panic right after start-up (tests of the panic report use it).
    #[arg(long = "debug-panic", hide = true)]
    pub debug_panic: bool,
}

/// The `--ready-fd` value read straight from argv, for reporting a command
/// line that clap refused.
pub fn ready_fd_from_argv() -> Option<RawFd> {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter().enumerate().find_map(|(i, a)| {
        let value = a.strip_prefix("--ready-fd=").or_else(|| {
            (a == "--ready-fd")
                .then(|| argv.get(i + 1).map(String::as_str))
                .flatten()
        })?;
        value.parse().ok()
    })
}

/// Everything the running server needs to know, resolved once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Socket and lock file paths.
    pub places: Places,
    /// Module dirs, searched in order.
    pub modules_dirs: Vec<PathBuf>,
    /// Delay between the last session leaving and exit.
    pub linger: Duration,
    /// Exit delay for a server that never had a session.
    pub idle_timeout: Duration,
    /// How often clients are asked to ping.
    pub keepalive_interval: Duration,
    /// A session silent for this long is dropped.
    pub client_timeout: Duration,
    /// Largest message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// How long a module gets after stdin closes, and again after SIGTERM.
    pub module_grace: Duration,
    /// Log file path (reported by Status).
    pub log_path: PathBuf,
    /// Whether we stay attached to the terminal.
    pub foreground: bool,
    /// How long to wait for an exiting server to release the socket.
    pub lock_wait: Duration,
    /// Modules the config asks to load at start (besides manifest autostart).
    pub autostart: Vec<String>,
    /// First delay of the `on-failure` restart backoff.
    pub restart_backoff: Duration,
    /// The compatibility TCP listener's address, if enabled.
    pub listen_tcp: Option<SocketAddr>,
    /// Deadline for calls whose caller set none (`None`: no deadline).
    pub call_timeout: Option<Duration>,
    /// Idle unload of modules whose manifest does not say (`None`: never).
    pub idle_unload: Option<Duration>,
    /// Most sessions attached at once.
    pub max_sessions: u32,
    /// Most calls in flight on one client connection (a session's calls
    /// share its connection).
    pub max_calls_per_session: u32,
    /// Most calls one module runs at once; more wait in line.
    pub max_calls_per_module: u32,
    /// Ping interval on module connections.
    pub module_ping_interval: Duration,
    /// A module leaving a ping unanswered this long is failed and killed.
    pub module_ping_timeout: Duration,
    /// Size at which the log is rotated.
    pub log_max_size: u64,
    /// Stderr lines per second each module may log (0: unlimited).
    pub stderr_lines_per_second: u32,
    /// Most connections open at once on the Unix socket.
    pub max_connections: u32,
    /// Most connections open at once on the TCP listener.
    pub max_tcp_connections: u32,
    /// A connection that starts no call or session this long after it
    /// opened is closed.
    pub first_call_timeout: Duration,
    /// A paused call still holding its module slot is cancelled when its
    /// caller reads nothing for this long.
    pub stall_timeout: Duration,
    /// Where each module's configuration comes from.
    pub module_configs: ModuleConfigs,
    /// Panic once started (`--debug-panic`, for tests of the panic report).
    pub debug_panic: bool,
}

impl Settings {
    /// Combines flags, environment, config file and defaults.
    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let config_path = match args.config {
            Some(p) => Some(p),
            None => places::config_path().ok(),
        };
        let config = match &config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        // The daemon runs from "/": a relative --socket is taken from here,
        // now (the config's own relative paths are anchored at its dir).
        let flag_socket = args.socket.map(|s| std::path::absolute(&s).unwrap_or(s));
        let places = match flag_socket.or(config.socket.clone()) {
            Some(sock) => Places::for_socket(sock),
            None => Places::from_env()?,
        };
        // The config was read and checked whole just above; hand its
        // `modules_dirs` to the rule rather than reading the file again.
        let config_dirs = match &config_path {
            Some(path) => ConfigDirs::Given {
                path: path.clone(),
                dirs: config.modules_dirs.clone(),
            },
            None => ConfigDirs::Read(None),
        };
        let modules_dirs = dirs::resolve(&args.modules_dirs, config_dirs)?
            .with_fallbacks(&args.fallback_modules_dirs);
        let log_path = match args.log {
            Some(p) => p,
            None => places::log_path().context("cannot place the log file")?,
        };
        let keepalive_interval = args.keepalive_interval.unwrap_or(Duration::from_secs(10));
        Ok(Settings {
            places,
            modules_dirs,
            linger: args
                .linger
                .or(config.linger)
                .unwrap_or(Duration::from_secs(3)),
            idle_timeout: args
                .idle_timeout
                .or(config.idle_timeout)
                .unwrap_or(Duration::from_secs(300)),
            keepalive_interval,
            client_timeout: args.client_timeout.unwrap_or(keepalive_interval * 3),
            max_message_size: config
                .max_message_size
                .unwrap_or(defaults::MAX_MESSAGE_SIZE),
            module_grace: config.module_grace.unwrap_or(defaults::MODULE_GRACE),
            log_path,
            foreground: args.foreground,
            lock_wait: args.lock_wait.unwrap_or(Duration::from_secs(10)),
            autostart: config.autostart.clone().unwrap_or_default(),
            restart_backoff: args.restart_backoff.unwrap_or(Duration::from_millis(250)),
            listen_tcp: args.listen_tcp.or(config.listen_tcp),
            call_timeout: config.call_timeout.flatten(),
            idle_unload: config.idle_unload.flatten(),
            max_sessions: config.max_sessions.unwrap_or(defaults::MAX_SESSIONS),
            max_calls_per_session: config
                .max_calls_per_session
                .unwrap_or(defaults::MAX_CALLS_PER_SESSION),
            max_calls_per_module: config
                .max_calls_per_module
                .unwrap_or(defaults::MAX_CALLS_PER_MODULE),
            module_ping_interval: config
                .module_ping_interval
                .unwrap_or(defaults::MODULE_PING_INTERVAL),
            module_ping_timeout: config
                .module_ping_timeout
                .unwrap_or(defaults::MODULE_PING_TIMEOUT),
            log_max_size: config.log_max_size.unwrap_or(defaults::LOG_MAX_SIZE),
            stderr_lines_per_second: config
                .stderr_lines_per_second
                .unwrap_or(defaults::STDERR_LINES_PER_SECOND),
            max_connections: config.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
            max_tcp_connections: config
                .max_tcp_connections
                .unwrap_or(defaults::MAX_TCP_CONNECTIONS),
            first_call_timeout: config
                .first_call_timeout
                .unwrap_or(defaults::FIRST_CALL_TIMEOUT),
            stall_timeout: config.stall_timeout.unwrap_or(defaults::STALL_TIMEOUT),
            module_configs: ModuleConfigs::new(config_path, args.module_configs),
            debug_panic: args.debug_panic,
        })
    }
}
