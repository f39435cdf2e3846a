//! Calls through the real server to the bundled `echo` module.

mod support;

use std::time::Duration;

use futures::StreamExt;
use norgopolis_client::{Client, ClientError, Code};
use serde::{Deserialize, Serialize};
use support::Sandbox;

/// Long enough that a test never sees it run out.
const HOUR_MS: u64 = 3_600_000;
/// Bound for waiting on something that should happen promptly.
const PROMPT: Duration = Duration::from_secs(20);

async fn client(sb: &Sandbox) -> Client {
    let c = Client::connect(sb.opts())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sb.log_text()));
    sb.track(c.server_pid());
    c
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Point {
    x: i64,
    label: String,
    tags: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip_and_structs_travel_as_maps() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    let p = Point {
        x: -7,
        label: "é".into(),
        tags: vec!["a".into()],
    };
    let back: Vec<Point> = c.call("echo", "echo", &p).await.expect("echo");
    assert_eq!(back, vec![p]);
    // The module saw a map with named fields, not a positional array.
    let raw: Vec<rmpv::Value> = c
        .call(
            "echo",
            "echo",
            &Point {
                x: 1,
                label: String::new(),
                tags: vec![],
            },
        )
        .await
        .unwrap();
    assert!(raw[0].is_map(), "{raw:?}");
    // No arguments: nil.
    let nil: Vec<Option<i32>> = c.call("echo", "echo", &()).await.unwrap();
    assert_eq!(nil, vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_items_arrive_in_order() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    let items: Vec<u32> = c.call("echo", "count", &200).await.expect("count");
    assert_eq!(items, (0..200).collect::<Vec<_>>());
}

#[derive(Serialize)]
struct Count {
    n: u32,
    delay_ms: u64,
}

/// Waits until the server reports `want` calls in flight.
async fn calls_in_flight_become(c: &Client, want: u32) {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        let s = c.status().await.expect("status");
        let module = s.modules.iter().find(|m| m.name == "echo");
        let in_module = module.map_or(0, |m| m.calls_in_flight);
        if s.calls_in_flight == want && in_module == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls in flight: server {}, echo {in_module}; wanted {want}",
            s.calls_in_flight
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_arrives_before_its_stream_ends_and_dropping_the_stream_cancels() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    // Item 0 at once, item 1 only after an hour.
    let args = Count {
        n: 2,
        delay_ms: HOUR_MS,
    };
    let mut stream = c
        .invoke::<_, u32>("echo", "count", &args)
        .await
        .expect("invoke");
    let first = tokio::time::timeout(PROMPT, stream.next())
        .await
        .expect("the first item must not wait for the end of the stream");
    assert_eq!(first.expect("an item").expect("no error"), 0);
    calls_in_flight_become(&c, 1).await;

    drop(stream);
    calls_in_flight_become(&c, 0).await;
    // The module itself is fine and serves the next call.
    let again: Vec<u32> = c.call("echo", "count", &3).await.unwrap();
    assert_eq!(again, vec![0, 1, 2]);
}

#[derive(Serialize)]
struct Fail<'a> {
    code: &'a str,
    message: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_errors_keep_their_code_and_message() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    let err = c
        .call::<_, rmpv::Value>(
            "echo",
            "fail",
            &Fail {
                code: "PermissionDenied",
                message: "not you",
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Call { code: Code::PermissionDenied, message } if message == "not you"),
        "{err:?}"
    );
    assert_eq!(err.code_name(), "PermissionDenied");

    let err = c
        .call::<_, rmpv::Value>("no_such_module", "f", &())
        .await
        .unwrap_err();
    assert_eq!(err.code_name(), "NotFound", "{err}");
    let err = c
        .call::<_, rmpv::Value>("../etc", "f", &())
        .await
        .unwrap_err();
    assert_eq!(err.code_name(), "InvalidArgument", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_of_the_wrong_type_is_a_decode_error() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    let err = c.call::<_, u32>("echo", "echo", &"text").await.unwrap_err();
    assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_larger_than_grpcs_default_limit_arrive() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    let n = 20 * 1024 * 1024;
    let mut stream = c
        .invoke_raw("echo", "big", msgpack_u64(n))
        .await
        .expect("invoke");
    let item = stream.next().await.expect("an item").expect("no error");
    let v = rmpv::decode::read_value(&mut item.as_slice()).unwrap();
    let bytes = v.as_slice().expect("binary");
    assert_eq!(bytes.len(), n);
    assert!(bytes.iter().enumerate().all(|(i, &b)| b == i as u8));
}

fn msgpack_u64(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::from(n as u64)).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_calls_load_and_unload_modules() {
    let sb = Sandbox::new();
    let c = client(&sb).await;
    let list = c.list_modules().await.unwrap();
    let echo = list
        .modules
        .iter()
        .find(|m| m.name == "echo")
        .expect("echo listed");
    assert!(!echo.loaded);

    let reply = c.load("echo", None).await.expect("load");
    let pid = reply.module.expect("module status").pid;
    assert!(pid > 0);
    assert!(!reply.already_loaded);
    let pids: Vec<u32> = c.call("echo", "pid", &()).await.unwrap();
    assert_eq!(pids, vec![pid]);
    let status = c.status().await.unwrap();
    assert_eq!(status.modules.len(), 1);
    assert_eq!(status.modules[0].name, "echo");

    assert!(c.unload("echo").await.unwrap());
    assert!(!c.unload("echo").await.unwrap());
    assert!(c.status().await.unwrap().modules.is_empty());
}
