//! Routing and streaming through the real server to the real echo module.

use std::time::{Duration, Instant};

use futures::StreamExt;
use norgopolis_tests::*;
use rmpv::Value;
use tonic::Code;

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

#[tokio::test]
async fn echo_round_trips_any_value() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let nested = map(&[
        ("int", Value::from(-(1i64 << 60))),
        ("bin", Value::Binary(vec![0, 255, 10])),
        (
            "list",
            Value::Array(vec![Value::Nil, Value::from(1.5), Value::from("s")]),
        ),
    ]);
    assert_eq!(
        call_all(&ch, "echo", "echo", nested.clone()).await.unwrap(),
        vec![nested]
    );
    assert_eq!(
        call_all(&ch, "echo", "echo", Value::Nil).await.unwrap(),
        vec![Value::Nil]
    );
}

#[tokio::test]
async fn missing_args_reach_the_module_as_nil() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let mut client = norgopolis_proto::communication::forwarder_client::ForwarderClient::new(ch);
    let mut stream = client
        .forward(norgopolis_proto::communication::Invocation {
            module: "echo".into(),
            function_name: "echo".into(),
            args: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value(&stream.next().await.unwrap().unwrap()), Value::Nil);
}

#[tokio::test]
async fn stream_items_arrive_in_order_and_before_the_stream_ends() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    // Warm the module so start-up is not part of the timing.
    call_all(&ch, "echo", "echo", Value::Nil).await.unwrap();

    let delay = 300u64;
    let started = Instant::now();
    let mut stream = call(
        &ch,
        "echo",
        "count",
        map(&[("n", 3.into()), ("delay_ms", delay.into())]),
    )
    .await
    .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut rest = vec![];
    while let Some(item) = stream.next().await {
        rest.push(value(&item.unwrap()));
    }
    let end_at = started.elapsed();
    assert_eq!(value(&first), Value::from(0));
    assert_eq!(rest, vec![Value::from(1), Value::from(2)]);
    // Causality, not speed: the first item was in our hands at least one
    // module-side delay before the stream could possibly have ended.
    assert!(
        end_at - first_at >= Duration::from_millis(delay),
        "first item arrived only with the end of the stream (first {first_at:?}, end {end_at:?})"
    );
}

#[tokio::test]
async fn module_errors_keep_code_and_message_after_items() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = call_all(
        &ch,
        "echo",
        "fail",
        map(&[
            ("code", "PermissionDenied".into()),
            ("message", "no way".into()),
        ]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "no way");

    let err = call_all(&ch, "echo", "no-such-function", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-function"), "{err:?}");
}

/// The items a module had sent before its error, all there when the call
/// starts, reach the caller in order, the error last (the server hands
/// what is already there on with the response headers, the rest later).
#[tokio::test]
async fn items_sent_before_an_error_arrive_first_then_the_error() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    for (n, fail_after) in [(5, 3), (40, 20), (3, 0)] {
        let args = map(&[("n", n.into()), ("fail_after", fail_after.into())]);
        let mut stream = call(&ch, "echo", "count", args).await.unwrap();
        let mut items = vec![];
        let err = loop {
            match stream.next().await {
                Some(Ok(item)) => items.push(value(&item)),
                Some(Err(status)) => break status,
                None => panic!("the call ended without its error after {items:?}"),
            }
        };
        assert_eq!(items, (0..fail_after).map(Value::from).collect::<Vec<_>>());
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        assert!(
            err.message()
                .contains(&format!("failed after {fail_after} items")),
            "{err:?}"
        );
        assert!(stream.next().await.is_none(), "nothing after the error");
    }
}

#[tokio::test]
async fn bad_module_names_are_refused_before_touching_disk() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let long = "a".repeat(65);
    for bad in [
        "../x",
        "/bin/sh",
        "",
        "a/../../echo",
        long.as_str(),
        "echo\0",
    ] {
        let err = call_all(&ch, bad, "echo", Value::Nil).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(err.message().contains("module name"), "{bad:?}: {err:?}");
    }
}

#[tokio::test]
async fn unknown_module_is_not_found_naming_module_and_dirs() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = call_all(&ch, "nonexistent", "f", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("'nonexistent'"), "{err:?}");
    assert!(
        err.message().contains(sb.modules.to_str().unwrap()),
        "{err:?}"
    );
}

#[tokio::test]
async fn module_gets_its_name_socket_and_path() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    assert_eq!(
        call_all(&ch, "echo", "env", Value::Nil).await.unwrap(),
        vec![Value::from("echo")]
    );
    let all = call_all(&ch, "echo", "env_all", Value::Nil)
        .await
        .unwrap()
        .remove(0);
    let get = |k: &str| {
        all.as_map()
            .unwrap()
            .iter()
            .find(|(kk, _)| kk.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("socket")
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref(),
        sb.socket.to_str()
    );
    assert_eq!(
        get("path").and_then(|v| v.as_str().map(str::to_owned)),
        std::env::var("PATH").ok(),
        "module PATH differs from the server's"
    );
}

#[tokio::test]
async fn concurrent_first_calls_start_one_process() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let calls = (0..16).map(|_| call_all(&ch, "echo", "pid", Value::Nil));
    let pids: std::collections::BTreeSet<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap()[0].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "several module processes: {pids:?}");
}

#[tokio::test]
async fn caller_going_away_cancels_the_module_call() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let mut control = norgopolis_proto::v1::control_client::ControlClient::new(ch.clone());
    let stream = call(
        &ch,
        "echo",
        "count",
        map(&[("n", 1_000_000.into()), ("delay_ms", 10.into())]),
    )
    .await
    .unwrap();
    let mut stream = stream;
    stream.next().await.unwrap().unwrap();
    let in_flight = |s: &norgopolis_proto::v1::StatusReply| {
        s.modules.iter().map(|m| m.calls_in_flight).sum::<u32>()
    };
    let status = control
        .status(norgopolis_proto::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_flight(&status), 1);
    drop(stream);
    // The server's accounting is what tells us the cancel reached it; ask
    // until it does, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = control
            .status(norgopolis_proto::v1::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if in_flight(&status) == 0 && status.calls_in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "call still in flight after the caller left: {status:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn large_messages_pass_the_default_limit() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let mut client = norgopolis_proto::communication::forwarder_client::ForwarderClient::new(ch)
        .max_decoding_message_size(64 << 20);
    let mut stream = client
        .forward(norgopolis_proto::communication::Invocation {
            module: "echo".into(),
            function_name: "big".into(),
            args: args(Value::from(8u64 << 20)),
        })
        .await
        .unwrap()
        .into_inner();
    let item = stream.next().await.unwrap().unwrap();
    assert_eq!(value(&item).as_slice().map(|b| b.len()), Some(8 << 20));
}
