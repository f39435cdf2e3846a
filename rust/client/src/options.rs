//! How a client finds, starts and introduces itself to the server.

use std::{ffi::OsString, path::PathBuf, time::Duration};

/// How to find or start the server.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Socket to use; `None` means `Places::from_env()` (`$NORGOPOLIS_SOCKET`
    /// or the per-user runtime dir).
    pub socket: Option<PathBuf>,
    /// Server binary to spawn; `None` means `$NORGOPOLIS_SERVER`, then a
    /// `norgopolis-server` beside the current executable, then `PATH`.
    pub server_binary: Option<PathBuf>,
    /// Extra arguments for a spawned server (e.g. `--modules-dir`, `--linger`).
    pub server_args: Vec<OsString>,
    /// Whether to start a server when none answers (default true).
    pub spawn: bool,
    /// Who we are: "rust", "cli", "nvim", "module", …
    pub client_kind: String,
    /// Free-form name shown in the server's status and log.
    pub client_name: String,
    /// Whether this session keeps the server alive (default true; clients
    /// inside modules set false so they never pin the server).
    pub keeps_server_alive: bool,
    /// How long starting a server (and each handshake) may take.
    pub spawn_timeout: Duration,
    /// How calls travel to the server (default [`Transport::Lean`]).
    pub transport: Transport,
    /// How long the server may leave a ping unanswered while lean calls
    /// wait on it before they fail as `Unavailable` (default 10 s).
    pub server_timeout: Duration,
}

/// How a client's calls travel to the server. The session and control
/// calls are always gRPC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Lean frames on a second connection: much less CPU per call. Falls
    /// back to gRPC where the server does not speak it.
    #[default]
    Lean,
    /// gRPC over the session's HTTP/2 connection (the public protocol).
    Grpc,
}

/// Environment variable that overrides [`ConnectOptions::transport`]
/// (`lean` or `grpc`), for comparing the two or working around one.
pub const TRANSPORT_ENV: &str = "NORGOPOLIS_CLIENT_TRANSPORT";

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lean" => Ok(Transport::Lean),
            "grpc" => Ok(Transport::Grpc),
            other => Err(format!(
                "unknown client transport {other:?}: expected \"lean\" or \"grpc\""
            )),
        }
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new("rust")
    }
}

impl ConnectOptions {
    /// Defaults for a client of the given kind.
    pub fn new(kind: &str) -> Self {
        ConnectOptions {
            socket: None,
            server_binary: None,
            server_args: Vec::new(),
            spawn: true,
            client_kind: kind.to_string(),
            client_name: default_client_name(),
            keeps_server_alive: true,
            spawn_timeout: Duration::from_secs(10),
            transport: Transport::default(),
            server_timeout: Duration::from_secs(10),
        }
    }

    /// Uses this socket (also passed to a spawned server as `--socket`).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Spawns this server binary when needed.
    pub fn server_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.server_binary = Some(path.into());
        self
    }

    /// Adds one argument for a spawned server.
    pub fn server_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.server_args.push(arg.into());
        self
    }

    /// Adds several arguments for a spawned server.
    pub fn server_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.server_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Allows or forbids starting a server.
    pub fn spawn(mut self, spawn: bool) -> Self {
        self.spawn = spawn;
        self
    }

    /// Sets the client kind sent in the handshake.
    pub fn client_kind(mut self, kind: impl Into<String>) -> Self {
        self.client_kind = kind.into();
        self
    }

    /// Sets the client name sent in the handshake.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Sets whether this session keeps the server alive.
    pub fn keeps_server_alive(mut self, keep: bool) -> Self {
        self.keeps_server_alive = keep;
        self
    }

    /// Sets how calls travel (see [`TRANSPORT_ENV`] for the override).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets how long a silent server is given while calls wait on it.
    pub fn server_timeout(mut self, timeout: Duration) -> Self {
        self.server_timeout = timeout;
        self
    }

    /// Sets the deadline for starting a server and for each handshake.
    pub fn spawn_timeout(mut self, timeout: Duration) -> Self {
        self.spawn_timeout = timeout;
        self
    }
}

fn default_client_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn transports_parse_by_name_and_others_are_refused_by_name() {
        assert_eq!("lean".parse(), Ok(Transport::Lean));
        assert_eq!("grpc".parse(), Ok(Transport::Grpc));
        let err = "http".parse::<Transport>().unwrap_err();
        assert!(
            err.contains("\"http\"") && err.contains("\"lean\" or \"grpc\""),
            "{err}"
        );
    }
}
