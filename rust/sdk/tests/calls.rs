//! The SDK served over an in-memory pipe, called with the real tonic
//! client the router uses.

use std::{future::Future, sync::Arc, time::Duration};

use norgopolis_proto::module_communication::{Invocation, MessagePack};
use norgopolis_sdk::{
    rmpv::Value,
    testing::{call, invoke, serve_in_memory, Client},
    Code, Emitter, Error, Module,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{oneshot, Mutex, Notify},
};

/// Upper bound so that a broken test fails instead of hanging; never a
/// timing assertion.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test step did not finish")
}

fn basic() -> Module {
    Module::new("test")
        .function("echo", |v: Value| async move { Ok(v) })
        .stream("count", |n: u64, out: Emitter| async move {
            for i in 0..n {
                out.send(&i).await?;
            }
            Ok(())
        })
        .stream("fail_after", |n: u64, out: Emitter| async move {
            for i in 0..n {
                out.send(&i).await?;
            }
            Err(Error::new(Code::Aborted, format!("stopped after {n}")))
        })
        .function("panic", |(): ()| async move {
            if std::hint::black_box(true) {
                panic!("deliberate");
            }
            Ok(())
        })
}

async fn client(module: Module) -> Client {
    within(serve_in_memory(module)).await.expect("connect").0
}

#[tokio::test]
async fn plain_function_round_trips_any_value() {
    let mut c = client(basic()).await;
    let value = Value::Map(vec![
        (Value::from("bin"), Value::Binary(vec![0, 1, 255])),
        (
            Value::from("nested"),
            Value::Array(vec![Value::Nil, Value::F32(0.5)]),
        ),
        (Value::from("ext"), Value::Ext(3, vec![9])),
    ]);
    let items = within(call(&mut c, "echo", &value)).await.unwrap();
    assert_eq!(items, vec![value]);
}

#[tokio::test]
async fn missing_args_are_nil() {
    let mut c = client(basic()).await;
    let mut stream = within(invoke::<()>(&mut c, "echo", None)).await.unwrap();
    let item = within(stream.message()).await.unwrap().unwrap();
    assert_eq!(
        norgopolis_proto::msgpack::decode_value(&item.data).unwrap(),
        Value::Nil
    );
    assert!(within(stream.message()).await.unwrap().is_none());

    // Present but empty bytes, as some clients send, mean nil too.
    let mut stream = within(c.invoke(Invocation {
        function_name: "echo".into(),
        args: Some(MessagePack { data: vec![] }),
    }))
    .await
    .unwrap()
    .into_inner();
    let item = within(stream.message()).await.unwrap().unwrap();
    assert_eq!(item.data, vec![0xc0]);
}

#[tokio::test]
async fn streams_keep_order() {
    let mut c = client(basic()).await;
    let items = within(call(&mut c, "count", &1000u64)).await.unwrap();
    let expected: Vec<Value> = (0..1000u64).map(Value::from).collect();
    assert_eq!(items, expected);
}

#[tokio::test]
async fn items_arrive_before_the_stream_ends() {
    let go_on = Arc::new(Notify::new());
    let module = Module::new("test").stream("first_then_wait", {
        let go_on = Arc::clone(&go_on);
        move |(): (), out: Emitter| {
            let go_on = Arc::clone(&go_on);
            async move {
                out.send("first").await?;
                go_on.notified().await;
                out.send("second").await
            }
        }
    });
    let mut c = client(module).await;
    let mut stream = within(invoke::<()>(&mut c, "first_then_wait", None))
        .await
        .unwrap();
    // The handler cannot finish until we have seen its first item.
    let first = within(stream.message()).await.unwrap().unwrap();
    assert_eq!(
        norgopolis_proto::msgpack::decode::<String>(&first.data).unwrap(),
        "first"
    );
    go_on.notify_one();
    let second = within(stream.message()).await.unwrap().unwrap();
    assert_eq!(
        norgopolis_proto::msgpack::decode::<String>(&second.data).unwrap(),
        "second"
    );
    assert!(within(stream.message()).await.unwrap().is_none());
}

#[tokio::test]
async fn error_after_items_comes_after_them() {
    let mut c = client(basic()).await;
    let mut stream = within(invoke(&mut c, "fail_after", Some(&3u64)))
        .await
        .unwrap();
    for i in 0..3u64 {
        let item = within(stream.message()).await.unwrap().unwrap();
        assert_eq!(
            norgopolis_proto::msgpack::decode::<u64>(&item.data).unwrap(),
            i
        );
    }
    let status = within(stream.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "stopped after 3");
}

#[tokio::test]
async fn error_without_items() {
    let mut c = client(basic()).await;
    let status = within(call(&mut c, "fail_after", &0u64)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
}

#[tokio::test]
async fn unknown_function_lists_the_functions() {
    let mut c = client(
        Module::new("echo")
            .function("b", |(): ()| async { Ok(()) })
            .function("a", |(): ()| async { Ok(()) })
            .function("c", |(): ()| async { Ok(()) }),
    )
    .await;
    let status = within(call(&mut c, "xyz", &())).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "module 'echo' has no function 'xyz' (has: a, b, c)"
    );
}

#[tokio::test]
async fn bad_args_name_function_and_shape() {
    #[derive(serde::Deserialize)]
    struct Point {
        #[allow(dead_code)]
        x: i64,
    }
    let module = basic()
        .function("point", |_: Point| async { Ok(()) })
        .function("described", |_: u8| async { Ok(()) })
        .describe_args("described", "a small number");
    let mut c = client(module).await;

    let status = within(call(&mut c, "count", &"many")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("test.count expects u64: "),
        "{}",
        status.message()
    );

    let status = within(call(&mut c, "point", &serde_json::json!({"y": 1})))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("test.point expects Point: ")
            && status.message().contains('x'),
        "{}",
        status.message()
    );

    let status = within(call(&mut c, "described", &1000)).await.unwrap_err();
    assert!(
        status
            .message()
            .starts_with("test.described expects a small number: "),
        "{}",
        status.message()
    );

    // The connection is still fine afterwards.
    assert_eq!(
        within(call(&mut c, "echo", &1)).await.unwrap(),
        vec![Value::from(1)]
    );
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_call() {
    let mut c = client(basic()).await;
    let status = within(call(&mut c, "panic", &())).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "function 'panic' panicked: deliberate");
    assert_eq!(
        within(call(&mut c, "echo", &"still here")).await.unwrap(),
        vec![Value::from("still here")]
    );
}

/// Dropped when the handler's future is dropped.
struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn cancelling_drops_the_handler() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let guard = Arc::new(Mutex::new(Some(dropped_tx)));
    let module = Module::new("test").stream("forever", move |(): (), out: Emitter| {
        let guard = Arc::clone(&guard);
        async move {
            let _guard = OnDrop(guard.lock().await.take());
            out.send("started").await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let mut c = client(module).await;
    let mut stream = within(invoke::<()>(&mut c, "forever", None)).await.unwrap();
    within(stream.message()).await.unwrap().unwrap();
    drop(stream);
    within(dropped_rx)
        .await
        .expect("the handler's future was dropped");
}

#[tokio::test]
async fn sends_fail_with_cancelled_once_the_caller_is_gone() {
    // An emitter clone in a task of its own outlives the handler's future
    // and sees the cancellation as a failing send.
    let (code_tx, code_rx) = oneshot::channel::<Code>();
    let code_tx = Arc::new(Mutex::new(Some(code_tx)));
    let module = Module::new("test").stream("detached", move |(): (), out: Emitter| {
        let code_tx = Arc::clone(&code_tx);
        async move {
            let code_tx = code_tx.lock().await.take();
            let worker = out.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                let err = loop {
                    if let Err(err) = worker.send(&i).await {
                        break err;
                    }
                    i += 1;
                };
                assert!(worker.is_closed());
                worker.closed().await;
                if let Some(tx) = code_tx {
                    let _ = tx.send(err.code());
                }
            });
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let mut c = client(module).await;
    let mut stream = within(invoke::<()>(&mut c, "detached", None))
        .await
        .unwrap();
    within(stream.message()).await.unwrap().unwrap();
    drop(stream);
    assert_eq!(within(code_rx).await.unwrap(), Code::Cancelled);
}

#[tokio::test]
async fn a_stalled_caller_holds_the_handler_back() {
    // Backpressure: with nobody reading, the handler cannot run ahead
    // without bound; it is still inside `send` when cancelled.
    let (done_tx, done_rx) = oneshot::channel::<u64>();
    let done = Arc::new(Mutex::new(Some(done_tx)));
    let module = Module::new("test").stream("flood", move |(): (), out: Emitter| {
        let done = Arc::clone(&done);
        async move {
            let done = done.lock().await.take();
            let mut sent = 0u64;
            let big = vec![7u8; 64 * 1024];
            while sent < 10_000 {
                if out.send(&Value::Binary(big.clone())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            if let Some(tx) = done {
                let _ = tx.send(sent);
            }
            Ok(())
        }
    });
    let mut c = client(module).await;
    let mut stream = within(invoke::<()>(&mut c, "flood", None)).await.unwrap();
    within(stream.message()).await.unwrap().unwrap();
    // 10,000 items of 64 KiB would be 640 MiB; HTTP/2 flow control plus the
    // bounded channel keep the handler blocked long before that, so it can
    // only be dropped, never finish.
    drop(stream);
    assert!(within(done_rx).await.is_err(), "handler ran to completion");
}

#[tokio::test]
async fn calls_run_concurrently() {
    let gate = Arc::new(Notify::new());
    let module = Module::new("test")
        .function("wait", {
            let gate = Arc::clone(&gate);
            move |(): ()| {
                let gate = Arc::clone(&gate);
                async move {
                    gate.notified().await;
                    Ok("released")
                }
            }
        })
        .function("release", {
            let gate = Arc::clone(&gate);
            move |(): ()| {
                let gate = Arc::clone(&gate);
                async move {
                    gate.notify_one();
                    Ok(())
                }
            }
        });
    let mut c = client(module).await;
    let mut waiting = c.clone();
    let waiter = tokio::spawn(async move { call(&mut waiting, "wait", &()).await });
    within(call(&mut c, "release", &())).await.unwrap();
    let items = within(waiter).await.unwrap().unwrap();
    assert_eq!(items, vec![Value::from("released")]);
}

#[tokio::test]
async fn large_messages_pass_both_ways() {
    let mut c = client(basic()).await;
    let big = Value::Binary((0..10 * 1024 * 1024).map(|i| i as u8).collect());
    let items = within(call(&mut c, "echo", &big)).await.unwrap();
    assert_eq!(items, vec![big]);
}

#[tokio::test]
async fn flush_waits_for_the_items_and_returns() {
    let module = Module::new("test").stream("flushy", |n: u64, out: Emitter| async move {
        for i in 0..n {
            out.send(&i).await?;
            out.flush().await?;
        }
        Ok(())
    });
    let mut c = client(module).await;
    let items = within(call(&mut c, "flushy", &50u64)).await.unwrap();
    assert_eq!(items.len(), 50);
}

#[tokio::test]
async fn eof_ends_serving_cleanly_even_mid_call() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let guard = Arc::new(Mutex::new(Some(dropped_tx)));
    let module = basic().stream("forever", move |(): (), out: Emitter| {
        let guard = Arc::clone(&guard);
        async move {
            let _guard = OnDrop(guard.lock().await.take());
            out.send("started").await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (mut c, server) = within(serve_in_memory(module)).await.unwrap();
    let mut stream = within(invoke::<()>(&mut c, "forever", None)).await.unwrap();
    within(stream.message()).await.unwrap().unwrap();
    drop(stream);
    drop(c);
    within(server).await.unwrap().expect("EOF is a clean end");
    within(dropped_rx).await.expect("the call was dropped");
}

#[tokio::test]
async fn eof_before_anything_is_clean() {
    let (client_side, module_side) = tokio::io::duplex(1024);
    let (r, w) = tokio::io::split(module_side);
    let server = tokio::spawn(basic().serve_io(r, w));
    drop(client_side);
    within(server).await.unwrap().expect("EOF is a clean end");
}

#[tokio::test]
async fn garbage_is_an_error_not_a_panic() {
    let (mut client_side, module_side) = tokio::io::duplex(1024);
    let (r, w) = tokio::io::split(module_side);
    let server = tokio::spawn(basic().serve_io(r, w));
    client_side
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not HTTP/2 at all")
        .await
        .unwrap();
    let mut sink = Vec::new();
    // The module answers (or just closes) and stops; read until it does.
    let _ = within(client_side.read_to_end(&mut sink)).await;
    let result = within(server).await.expect("no panic");
    assert!(result.is_err(), "garbage accepted: {result:?}");
}

#[tokio::test]
async fn shutdown_future_stops_serving() {
    let (_client_side, module_side) = tokio::io::duplex(1024);
    let (r, w) = tokio::io::split(module_side);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(basic().serve_io_until(r, w, async move {
        let _ = stop_rx.await;
    }));
    stop_tx.send(()).unwrap();
    within(server).await.unwrap().unwrap();
}
