//! The error a function answers with: a gRPC code and a message, which the
//! router hands to the caller unchanged.

pub use tonic::Code;

/// A failed call: a gRPC status code and a human-readable message.
///
/// Handlers return it with `?` or `Err(Error::new(..))`; the caller sees the
/// same code and message (for example `{ code = "NotFound", message = … }`
/// in Lua).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    code: Code,
    message: String,
}

impl Error {
    /// An error with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `InvalidArgument`: the caller sent arguments the function cannot use.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `NotFound`: something the caller named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// `FailedPrecondition`: the call is valid but cannot run in this state.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    /// `Internal`: the module itself went wrong.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// `Cancelled`: the caller went away; returned by [`crate::Emitter`]
    /// once nobody listens any more.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(Code::Cancelled, message)
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message shown to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        tonic::Status::new(err.code, err.message)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::new(status.code(), status.message())
    }
}

impl From<std::io::Error> for Error {
    /// Keeps the meaning of the common I/O failures (a missing file is
    /// `NotFound`, not `Internal`), so callers can react to them.
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let code = match err.kind() {
            K::NotFound => Code::NotFound,
            K::PermissionDenied => Code::PermissionDenied,
            K::AlreadyExists => Code::AlreadyExists,
            K::InvalidInput | K::InvalidData => Code::InvalidArgument,
            K::TimedOut => Code::DeadlineExceeded,
            K::Interrupted => Code::Cancelled,
            K::Unsupported => Code::Unimplemented,
            _ => Code::Internal,
        };
        Self::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_code_and_message() {
        let status: tonic::Status = Error::new(Code::Aborted, "stop").into();
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(status.message(), "stop");
        assert_eq!(Error::from(status), Error::new(Code::Aborted, "stop"));
    }

    #[test]
    fn io_errors_keep_their_meaning() {
        let e = Error::from(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(e.message(), "gone");
        assert_eq!(e.to_string(), "NotFound: gone");
    }
}
