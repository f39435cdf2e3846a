//! Talking to a module the way the router does, for tests: a real tonic
//! `InvokerClient` over any byte stream (an in-memory duplex, or a child
//! process's stdout/stdin).

use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use norgopolis_proto::module_communication::{
    invoker_client::InvokerClient, Invocation, MessagePack,
};
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinHandle,
};
use tonic::{
    transport::{Channel, Endpoint},
    Status, Streaming,
};

use crate::{Module, ServeError};

/// A gRPC client of one module connection.
pub type Client = InvokerClient<Channel>;

/// Connects a client over `reader` (the module's output) and `writer` (its
/// input). The connection cannot be re-established once it ends.
pub async fn connect<R, W>(reader: R, writer: W) -> Result<Client, tonic::transport::Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let io = Arc::new(Mutex::new(Some(tokio::io::join(reader, writer))));
    let connector = tower::service_fn(move |_: http::Uri| {
        let io = io
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        async move {
            io.map(TokioIo::new).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the module connection has already been used",
                )
            })
        }
    });
    let channel = Endpoint::from_static("http://module.invalid")
        .connect_with_connector(connector)
        .await?;
    Ok(InvokerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// Serves `module` on an in-memory pipe in a background task and connects
/// a client to it. The task ends (with the serving result) once every
/// clone of the client is dropped.
pub async fn serve_in_memory(
    module: Module,
) -> Result<(Client, JoinHandle<Result<(), ServeError>>), tonic::transport::Error> {
    let (client_side, module_side) = tokio::io::duplex(64 * 1024);
    let (module_read, module_write) = tokio::io::split(module_side);
    let server = tokio::spawn(module.serve_io(module_read, module_write));
    let (client_read, client_write) = tokio::io::split(client_side);
    let client = connect(client_read, client_write).await?;
    Ok((client, server))
}

/// Starts a call with `args` encoded as MessagePack (`None`: no arguments).
pub async fn invoke<A: Serialize + ?Sized>(
    client: &mut Client,
    function: &str,
    args: Option<&A>,
) -> Result<Streaming<MessagePack>, Status> {
    let args = match args {
        Some(a) => Some(MessagePack {
            data: norgopolis_proto::msgpack::encode(a)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        }),
        None => None,
    };
    let invocation = Invocation {
        function_name: function.to_owned(),
        args,
    };
    Ok(client.invoke(invocation).await?.into_inner())
}

/// Calls `function` and collects every item it sends, decoded as dynamic
/// values, or the first error.
pub async fn call<A: Serialize + ?Sized>(
    client: &mut Client,
    function: &str,
    args: &A,
) -> Result<Vec<rmpv::Value>, Status> {
    let mut stream = invoke(client, function, Some(args)).await?;
    let mut items = Vec::new();
    while let Some(item) = stream.message().await? {
        items.push(
            norgopolis_proto::msgpack::decode_value(&item.data)
                .map_err(|e| Status::internal(e.to_string()))?,
        );
    }
    Ok(items)
}
