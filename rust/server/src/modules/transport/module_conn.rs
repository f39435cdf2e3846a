//! The connection to a module and one call's results, whichever transport
//! the module declared: what the instance and the router hold.

use norgopolis_proto::module_communication as mc;

use super::{
    http2::ModuleClient,
    lean_pipe::{LeanClient, LeanStream},
};

/// The connection to a module, over the transport it declared.
#[derive(Clone)]
pub enum ModuleConn {
    /// gRPC over HTTP/2 (every module unless it declares otherwise).
    Grpc(ModuleClient),
    /// The lean transport (modules built with our SDK that ask for it).
    Lean(LeanClient),
}

/// One call's results, from either transport.
pub enum ModuleStream {
    /// A gRPC response stream (boxed: it is much larger than a lean call).
    Grpc(Box<tonic::Streaming<mc::MessagePack>>),
    /// A lean call.
    Lean(LeanStream),
}

impl ModuleStream {
    /// The next result; `None` after the last; an error ends the call.
    /// Dropping the stream before the end cancels the call in the module.
    pub async fn message(&mut self) -> Result<Option<mc::MessagePack>, tonic::Status> {
        match self {
            ModuleStream::Grpc(s) => s.message().await,
            ModuleStream::Lean(s) => Ok(s.message().await?.map(|data| mc::MessagePack { data })),
        }
    }
}
