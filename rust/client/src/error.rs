//! Errors a client call can end with, and their gRPC-style code names.

use std::path::PathBuf;

use norgopolis_proto::msgpack::MsgpackError;

/// Everything that can go wrong talking to (or starting) the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server or a module answered with a gRPC status; code and message
    /// are kept as sent.
    #[error("{}: {message}", code_name(*code))]
    Call {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A server was needed but could not be started.
    #[error("cannot start the norgopolis server: {message}{}", log_hint(log_path))]
    Spawn {
        /// What failed, including the server's own error line if it sent one.
        message: String,
        /// Where the server logs, for the details.
        log_path: Option<PathBuf>,
    },
    /// No server binary was found in any of the places looked at.
    #[error("cannot find the norgopolis server binary; looked at: {}", tried.join(", "))]
    ServerNotFound {
        /// Every place looked at, in order.
        tried: Vec<String>,
    },
    /// The server speaks another version of the `norgopolis.v1` protocol.
    #[error(
        "norgopolis protocol mismatch: this client (norgopolis {}) speaks protocol version \
         {ours}, the server answered: {theirs}. Install the same norgopolis for the plugin (or \
         client) and the server, then restart this Neovim (or program)",
        norgopolis_common::version()
    )]
    ProtocolMismatch {
        /// Our `PROTOCOL_VERSION`.
        ours: u32,
        /// The server's version, or its refusal message naming it.
        theirs: String,
    },
    /// The runtime dir (socket, locks) is unusable.
    #[error(transparent)]
    Places(#[from] norgopolis_common::PlacesError),
    /// The socket could not be reached (and spawning was not allowed or
    /// not possible).
    #[error("cannot connect to the norgopolis server at {}: {source}", socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The process listening on the socket runs as another user: nothing
    /// was sent to it.
    #[error(
        "refusing the norgopolis server at {}: it runs as uid {uid}, not as you (uid {me}); \
         nothing was sent to it. Stop that process or remove the socket, or set {} to a \
         socket in a directory of your own",
        socket.display(),
        norgopolis_common::places::SOCKET_ENV
    )]
    ForeignServer {
        /// The socket connected to.
        socket: PathBuf,
        /// The listener's uid, from the peer credentials.
        uid: u32,
        /// Our effective uid.
        me: u32,
    },
    /// `NORGOPOLIS_CLIENT_TRANSPORT` names no transport.
    #[error("{}: {0}", crate::options::TRANSPORT_ENV)]
    BadTransport(String),
    /// Call arguments could not be encoded as MessagePack.
    #[error("cannot encode call arguments: {0}")]
    Encode(#[source] MsgpackError),
    /// A result could not be decoded into the requested type.
    #[error("cannot decode a call result: {0}")]
    Decode(#[source] MsgpackError),
}

fn log_hint(log_path: &Option<PathBuf>) -> String {
    match log_path {
        Some(p) => format!(" (see the server log at {})", p.display()),
        None => String::new(),
    }
}

/// CamelCase name of a gRPC code, as the Lua API and the CLI show it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

impl ClientError {
    /// The gRPC code this error stands for. Errors that never crossed the
    /// wire get the code a gRPC client would have seen for the same cause.
    pub fn code(&self) -> tonic::Code {
        match self {
            ClientError::Call { code, .. } => *code,
            ClientError::Spawn { .. }
            | ClientError::ServerNotFound { .. }
            | ClientError::Connect { .. } => tonic::Code::Unavailable,
            ClientError::ProtocolMismatch { .. } | ClientError::Places(_) => {
                tonic::Code::FailedPrecondition
            }
            ClientError::ForeignServer { .. } => tonic::Code::PermissionDenied,
            ClientError::Encode(_) | ClientError::BadTransport(_) => tonic::Code::InvalidArgument,
            ClientError::Decode(_) => tonic::Code::Internal,
        }
    }

    /// gRPC-style code name: "NotFound", "InvalidArgument", "Unavailable", …
    pub fn code_name(&self) -> &'static str {
        code_name(self.code())
    }

    /// The message without the code prefix (for `Call`, the server's
    /// message as sent; otherwise the full description).
    pub fn message(&self) -> String {
        match self {
            ClientError::Call { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether this is a gRPC status with the given code.
    pub fn is_code(&self, code: tonic::Code) -> bool {
        self.code() == code
    }
}

impl From<norgopolis_catalog::server_binary::ServerNotFound> for ClientError {
    fn from(e: norgopolis_catalog::server_binary::ServerNotFound) -> Self {
        ClientError::ServerNotFound {
            tried: e.looked_at(),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Call {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_code_and_message() {
        let e = ClientError::from(tonic::Status::not_found("no module 'x'"));
        assert_eq!(e.code_name(), "NotFound");
        assert_eq!(e.message(), "no module 'x'");
        assert_eq!(e.to_string(), "NotFound: no module 'x'");
    }

    #[test]
    fn every_code_has_its_camel_case_name() {
        let all = [
            (tonic::Code::Ok, "Ok"),
            (tonic::Code::Cancelled, "Cancelled"),
            (tonic::Code::Unknown, "Unknown"),
            (tonic::Code::InvalidArgument, "InvalidArgument"),
            (tonic::Code::DeadlineExceeded, "DeadlineExceeded"),
            (tonic::Code::NotFound, "NotFound"),
            (tonic::Code::AlreadyExists, "AlreadyExists"),
            (tonic::Code::PermissionDenied, "PermissionDenied"),
            (tonic::Code::ResourceExhausted, "ResourceExhausted"),
            (tonic::Code::FailedPrecondition, "FailedPrecondition"),
            (tonic::Code::Aborted, "Aborted"),
            (tonic::Code::OutOfRange, "OutOfRange"),
            (tonic::Code::Unimplemented, "Unimplemented"),
            (tonic::Code::Internal, "Internal"),
            (tonic::Code::Unavailable, "Unavailable"),
            (tonic::Code::DataLoss, "DataLoss"),
            (tonic::Code::Unauthenticated, "Unauthenticated"),
        ];
        for (code, name) in all {
            // tonic's Debug spelling is the canonical one; both must agree.
            assert_eq!(code_name(code), name);
            assert_eq!(format!("{code:?}"), name);
        }
    }

    #[test]
    fn local_errors_map_to_grpc_codes() {
        let spawn = ClientError::Spawn {
            message: "error bind failed".into(),
            log_path: Some("/l/server.log".into()),
        };
        assert_eq!(spawn.code_name(), "Unavailable");
        assert!(spawn.message().contains("/l/server.log"), "{spawn}");
        let mismatch = ClientError::ProtocolMismatch {
            ours: 1,
            theirs: "2".into(),
        };
        assert_eq!(mismatch.code_name(), "FailedPrecondition");
        let missing = ClientError::ServerNotFound {
            tried: vec!["$NORGOPOLIS_SERVER (unset)".into(), "PATH".into()],
        };
        assert!(missing
            .message()
            .contains("$NORGOPOLIS_SERVER (unset), PATH"));
    }
}
