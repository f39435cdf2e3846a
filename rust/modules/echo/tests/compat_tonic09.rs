//! Wire compatibility: the gRPC stack the public norgopolis router and the
//! `norgopolis-module` 2.x crate are built on (tonic 0.9, hyper 0.14, h2
//! 0.3, prost 0.11) calls the echo module over its stdio. The messages are
//! declared here with prost 0.11, field for field as `proto/module.proto`.

use std::{future::Future, process::Stdio, sync::Mutex, time::Duration};

use tokio::process::Command;
use tonic09::{
    codec::ProstCodec,
    codegen::http::uri::PathAndQuery,
    transport::{Endpoint, Uri},
    Code,
};

#[derive(Clone, PartialEq, prost::Message)]
struct MessagePack {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Invocation {
    #[prost(string, tag = "1")]
    function_name: String,
    #[prost(message, optional, tag = "2")]
    args: Option<MessagePack>,
}

const INVOKE: &str = "/module_communication.Invoker/Invoke";

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test step did not finish")
}

type Grpc = tonic09::client::Grpc<tonic09::transport::Channel>;

async fn invoke(
    grpc: &mut Grpc,
    function: &str,
    args: Option<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, tonic09::Status> {
    within(grpc.ready()).await.expect("channel ready");
    let request = tonic09::Request::new(Invocation {
        function_name: function.into(),
        args: args.map(|data| MessagePack { data }),
    });
    let mut stream = within(grpc.server_streaming(
        request,
        PathAndQuery::from_static(INVOKE),
        ProstCodec::<Invocation, MessagePack>::default(),
    ))
    .await?
    .into_inner();
    let mut items = Vec::new();
    while let Some(item) = within(stream.message()).await? {
        items.push(item.data);
    }
    Ok(items)
}

#[tokio::test]
async fn tonic_0_9_client_calls_echo() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn echo");
    let io = Mutex::new(Some(tokio::io::join(
        child.stdout.take().unwrap(),
        child.stdin.take().unwrap(),
    )));
    let connector = tower::service_fn(move |_: Uri| {
        let io = io.lock().unwrap().take();
        async move { io.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "used")) }
    });
    let channel =
        within(Endpoint::from_static("http://module.invalid").connect_with_connector(connector))
            .await
            .expect("connect");
    let mut grpc = Grpc::new(channel);

    // No args at all (what the public client sends for argument-less calls).
    assert_eq!(
        invoke(&mut grpc, "echo", None).await.unwrap(),
        vec![vec![0xc0]]
    );

    // MessagePack in, the same MessagePack out.
    let value = norgopolis_proto::msgpack::encode(&("text", [1, 2, 3], true)).unwrap();
    assert_eq!(
        invoke(&mut grpc, "echo", Some(value.clone()))
            .await
            .unwrap(),
        vec![value]
    );

    // A stream of items.
    let items = invoke(&mut grpc, "count", Some(vec![3])).await.unwrap();
    assert_eq!(items, vec![vec![0], vec![1], vec![2]]);

    // Error codes and messages.
    let fail = norgopolis_proto::msgpack::encode(&std::collections::BTreeMap::from([
        ("code", "PermissionDenied"),
        ("message", "no"),
    ]))
    .unwrap();
    let status = invoke(&mut grpc, "fail", Some(fail)).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "no")
    );
    let status = invoke(&mut grpc, "missing", None).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    drop(grpc);
    let exit = within(child.wait()).await.unwrap();
    assert_eq!(exit.code(), Some(0));
}
