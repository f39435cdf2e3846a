//! The lean transport between client and server: our client's default,
//! on a second connection beside the session's HTTP/2 one, against the
//! real server and the real echo module (over gRPC and over lean).

mod support;

use std::time::Duration;

use futures::StreamExt;
use norgopolis_client::{CallStream, Client, ClientError, ConnectOptions, Transport};
use norgopolis_proto::lean_frame::{Frame, Incoming};
use norgopolis_tests::*;
use rmpv::Value;
use support::{client_with, map, raw_lean, send, WAIT};
use tokio::io::AsyncWriteExt;
use tonic::Code;

/// The echo module spoken to over the lean module transport.
const LEAN: &str = "lecho";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.add_lean_module(LEAN, &bin("echo"), &[]);
    sb
}

async fn call(
    client: &Client,
    module: &str,
    function: &str,
    arg: Value,
) -> Result<Vec<Value>, ClientError> {
    let calling = client.call::<Value, Value>(module, function, &arg);
    tokio::time::timeout(WAIT, calling)
        .await
        .expect("the call did not finish")
}

/// The error that ends `stream`, skipping its items; panics if it hangs
/// or ends cleanly (although `why` it should not).
async fn error_ending(stream: &mut CallStream<u64>, why: &str) -> ClientError {
    loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the call hangs")
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return e,
            None => panic!("the call ended cleanly although {why}"),
        }
    }
}

async fn in_flight(client: &Client, module: &str) -> u32 {
    let status = client.status().await.expect("status");
    status
        .modules
        .iter()
        .find(|m| m.name == module)
        .map_or(0, |m| m.calls_in_flight)
}

#[tokio::test]
async fn both_transports_give_the_same_results_errors_and_streams() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let lean = client_with(&sb, Transport::Lean).await;
    let grpc = client_with(&sb, Transport::Grpc).await;
    assert!(
        lean.is_lean(),
        "our server speaks lean, so the default should use it"
    );
    assert!(!grpc.is_lean());

    let value = map(&[
        (
            "list",
            Value::Array(vec![1.into(), "two".into(), Value::Nil]),
        ),
        ("bin", Value::Binary(vec![0, 255, 7])),
    ]);
    let mib = Value::Binary((0..1 << 20).map(|i| (i % 251) as u8).collect());
    for client in [&lean, &grpc] {
        for module in ["echo", LEAN] {
            let what = format!(
                "{module} over {}",
                if client.is_lean() { "lean" } else { "gRPC" }
            );
            assert_eq!(
                call(client, module, "echo", value.clone()).await.unwrap(),
                vec![value.clone()],
                "{what}"
            );
            assert_eq!(
                call(client, module, "echo", mib.clone()).await.unwrap(),
                vec![mib.clone()],
                "{what}"
            );
            let counted = call(client, module, "count", Value::from(1000))
                .await
                .unwrap();
            let expected: Vec<Value> = (0..1000u64).map(Value::from).collect();
            assert_eq!(counted, expected, "{what}");

            let err = call(
                client,
                module,
                "fail",
                map(&[("code", "Aborted".into()), ("message", "on purpose".into())]),
            )
            .await
            .unwrap_err();
            assert_eq!(err.code(), Code::Aborted, "{what}: {err}");
            assert!(err.message().contains("on purpose"), "{what}: {err}");

            // Items sent before a failure arrive, then the error.
            let mut stream = client
                .invoke::<Value, u64>(
                    module,
                    "count",
                    &map(&[("n", 5.into()), ("fail_after", 3.into())]),
                )
                .await
                .unwrap();
            let mut got = Vec::new();
            let err = loop {
                match stream
                    .next()
                    .await
                    .expect("the stream ended without its error")
                {
                    Ok(n) => got.push(n),
                    Err(e) => break e,
                }
            };
            assert_eq!(got, vec![0, 1, 2], "{what}");
            assert_eq!(err.code(), Code::Aborted, "{what}");
            assert!(
                stream.next().await.is_none(),
                "{what}: nothing after the error"
            );
        }
        let err = call(client, "no-such-module", "echo", Value::Nil)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err}");
        assert!(err.message().contains("no-such-module"), "{err}");
        let err = call(client, "../etc", "echo", Value::Nil)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    }
}

#[tokio::test]
async fn dropping_a_lean_call_cancels_it_in_the_module() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    for module in ["echo", LEAN] {
        let slow = map(&[("n", 1_000_000.into()), ("delay_ms", 20.into())]);
        let mut stream = client
            .invoke::<Value, u64>(module, "count", &slow)
            .await
            .unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        assert_eq!(in_flight(&client, module).await, 1, "{module}");
        drop(stream);
        eventually(WAIT, "the dropped call to end in the module", || async {
            (in_flight(&client, module).await == 0).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_lean_caller_that_stops_reading_holds_up_only_its_own_call() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    for module in ["echo", LEAN] {
        // Far more results than any credit or socket buffer holds, unread.
        let many = Value::from(200_000);
        let mut stalled = client
            .invoke::<Value, u64>(module, "count", &many)
            .await
            .unwrap();
        assert_eq!(stalled.next().await.unwrap().unwrap(), 0);
        for i in 0..200 {
            let v = Value::from(i);
            assert_eq!(
                call(&client, module, "echo", v.clone()).await.unwrap(),
                vec![v],
                "{module}"
            );
        }
        // The stalled call is still whole: it goes on where it stopped.
        for expected in 1..1000u64 {
            assert_eq!(stalled.next().await.unwrap().unwrap(), expected, "{module}");
        }
    }
}

#[tokio::test]
async fn the_per_connection_call_limit_applies_to_lean_calls() {
    let sb = sandbox();
    sb.write_config("max_calls_per_session = 2\n");
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    let first = client
        .invoke::<Value, u64>("echo", "sleep", &Value::from(60_000))
        .await
        .unwrap();
    let second = client
        .invoke::<Value, u64>("echo", "sleep", &Value::from(60_000))
        .await
        .unwrap();
    eventually(WAIT, "both sleeps to run", || async {
        (in_flight(&client, "echo").await == 2).then_some(())
    })
    .await;
    let err = call(&client, "echo", "echo", Value::Nil).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("max_calls_per_session"), "{err}");
    drop((first, second));
    eventually(WAIT, "a call to fit again", || async {
        call(&client, "echo", "echo", Value::Nil).await.ok()
    })
    .await;
}

#[tokio::test]
async fn oversized_arguments_fail_their_call_only() {
    let sb = sandbox();
    sb.write_config("max_message_size = 65536\n");
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    let big = Value::Binary(vec![7; 100_000]);
    let err = call(&client, "echo", "echo", big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("max_message_size"), "{err}");
    // The connection goes on.
    assert_eq!(
        call(&client, "echo", "echo", Value::from(1)).await.unwrap(),
        vec![Value::from(1)]
    );
    assert!(client.is_lean());
}

#[tokio::test]
async fn a_lean_client_breaking_the_protocol_is_dropped_and_others_go_on() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let bystander = client_with(&sb, Transport::Lean).await;

    // A well-formed call over a raw connection works...
    let (mut frames, mut write) = raw_lean(&sb.socket).await;
    let nil = vec![0xc0];
    send(
        &mut write,
        Frame::Route {
            id: 5,
            module: "echo".into(),
            function: "echo".into(),
            args: nil.clone(),
            deadline_ms: None,
        },
    )
    .await;
    let item = tokio::time::timeout(WAIT, frames.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item,
        Some(Incoming::Frame(Frame::Item {
            id: 5,
            data: nil.clone()
        }))
    );
    let end = tokio::time::timeout(WAIT, frames.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, Some(Incoming::Frame(Frame::End { id: 5 })));

    // ...a frame only servers send ends the connection...
    send(
        &mut write,
        Frame::Item {
            id: 1,
            data: nil.clone(),
        },
    )
    .await;
    let after = tokio::time::timeout(WAIT, frames.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after, None,
        "the server closes a connection that breaks the protocol"
    );

    // ...as does reusing the id of a call in flight...
    let (mut frames, mut write) = raw_lean(&sb.socket).await;
    let sleep = |id| Frame::Route {
        id,
        module: "echo".into(),
        function: "sleep".into(),
        args: vec![0xcd, 0xea, 0x60], // 60000
        deadline_ms: None,
    };
    send(&mut write, sleep(7)).await;
    send(&mut write, sleep(7)).await;
    let after = tokio::time::timeout(WAIT, frames.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, None, "a reused call id ends the connection");

    // ...and so does garbage, while nobody else notices.
    let (mut frames, mut write) = raw_lean(&sb.socket).await;
    write
        .write_all(&[9, 0, 0, 0, 1, 0, 0, 0, 200, 1, 2, 3, 4])
        .await
        .unwrap();
    let after = tokio::time::timeout(WAIT, frames.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, None);
    assert_eq!(
        call(&bystander, "echo", "echo", Value::from(3))
            .await
            .unwrap(),
        vec![Value::from(3)]
    );
    assert_eq!(
        call(&bystander, LEAN, "echo", Value::from(4))
            .await
            .unwrap(),
        vec![Value::from(4)]
    );
}

#[tokio::test]
async fn a_server_killed_mid_call_fails_the_call_as_unavailable() {
    let sb = sandbox();
    let mut server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    let slow = map(&[("n", 1_000_000.into()), ("delay_ms", 20.into())]);
    let mut stream = client
        .invoke::<Value, u64>("echo", "count", &slow)
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), 0);
    server.child.kill().unwrap();
    let err = error_ending(&mut stream, "its server died").await;
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("norgopolis server"), "{err}");
    let err = call(&client, "echo", "echo", Value::Nil).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(server.exited_within(WAIT).await);
}

#[tokio::test]
async fn an_idle_lean_connection_does_not_hold_up_the_servers_exit() {
    let sb = sandbox();
    let mut server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    assert_eq!(
        call(&client, "echo", "echo", Value::Nil).await.unwrap(),
        vec![Value::Nil]
    );
    client.shutdown("test").await.unwrap();
    // The server waits up to 3 s for connections still busy; an idle lean
    // one must not count as busy.
    assert!(server.exited_within(Duration::from_secs(2)).await);
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_arguments_from_many_callers_at_once_arrive_whole() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    // Each argument is several socket buffers long, so frames wait in the
    // writer's backlog while others are sent: they must not interleave.
    let calls = (0..8u8).map(|k| {
        let client = client.clone();
        tokio::spawn(async move {
            let arg = Value::Binary((0..3 << 20).map(|i| (i % 251) as u8 ^ k).collect());
            let back = call(&client, "echo", "echo", arg.clone()).await.unwrap();
            assert_eq!(back, vec![arg], "caller {k}");
        })
    });
    for done in futures::future::join_all(calls).await {
        done.unwrap();
    }
}

#[tokio::test]
async fn a_call_started_from_a_thread_outside_the_runtime_runs() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let client = client_with(&sb, Transport::Lean).await;
    // As the Neovim plugin does from its main thread.
    let starter = client.clone();
    let mut stream = std::thread::spawn(move || starter.start_raw("echo", "count", vec![0x03]))
        .join()
        .unwrap();
    let mut got = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        got.push(item.unwrap());
    }
    assert_eq!(got, vec![vec![0x00], vec![0x01], vec![0x02]]);
}

/// Stops or continues a process (SIGSTOP / SIGCONT).
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test]
async fn calls_waiting_on_a_stopped_server_fail_and_later_calls_use_grpc() {
    let sb = sandbox();
    let server = sb.start_server(&[]);
    let opts = ConnectOptions::new("test")
        .socket(&sb.socket)
        .spawn(false)
        .server_timeout(Duration::from_millis(500));
    let client = Client::connect(opts).await.unwrap();
    assert!(client.is_lean());
    let slow = map(&[("n", 1_000_000.into()), ("delay_ms", 20.into())]);
    let mut stream = client
        .invoke::<Value, u64>("echo", "count", &slow)
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), 0);

    signal(server.pid, "-STOP");
    let err = error_ending(&mut stream, "its server is stopped").await;
    signal(server.pid, "-CONT");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("did not answer for 500 ms"), "{err}");

    // The session lived on, so the client calls over it from now on.
    assert!(!client.is_lean());
    assert!(client.is_attached());
    assert_eq!(
        call(&client, "echo", "echo", Value::from(5)).await.unwrap(),
        vec![Value::from(5)]
    );
    // The server saw the lean connection go and stopped the call it ran
    // for it.
    eventually(WAIT, "the abandoned call to end", || async {
        (in_flight(&client, "echo").await == 0).then_some(())
    })
    .await;
}
