//! The lean module transport: a module folder declaring `transport =
//! "lean"` whose executable is the real echo module (built with our SDK,
//! so it speaks lean when told to), against a real server.
//!
//! That echo answers at all proves it spoke lean: the server refuses a
//! module declared lean whose first bytes are not the lean hello (see
//! `a_grpc_only_module_declared_lean_fails_clearly`).

mod support;

use std::time::Duration;

use futures::StreamExt;
use norgopolis_tests::*;
use rmpv::Value;
use support::{map, WAIT};
use tonic::Code;

/// The lean echo's module name.
const LEAN: &str = "lecho";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.add_lean_module(LEAN, &bin("echo"), &[]);
    sb
}

async fn all(
    ch: &tonic::transport::Channel,
    module: &str,
    function: &str,
    arg: Value,
) -> Result<Vec<Value>, tonic::Status> {
    tokio::time::timeout(WAIT, call_all(ch, module, function, arg))
        .await
        .expect("call did not finish")
}

async fn pid_of(ch: &tonic::transport::Channel, module: &str) -> u32 {
    let v = all(ch, module, "pid", Value::Nil).await.unwrap();
    v[0].as_u64().expect("pid") as u32
}

fn in_flight(status: &norgopolis_proto::v1::StatusReply, module: &str) -> Option<u32> {
    module_status(status, module).map(|m| m.calls_in_flight)
}

#[tokio::test]
async fn echo_round_trips_small_and_one_mib_values() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();

    let nested = map(&[
        (
            "list",
            Value::Array(vec![1.into(), "two".into(), Value::Nil]),
        ),
        ("bin", Value::Binary(vec![0, 255, 7])),
    ]);
    assert_eq!(
        all(&ch, LEAN, "echo", nested.clone()).await.unwrap(),
        vec![nested]
    );
    assert_eq!(
        all(&ch, LEAN, "echo", Value::Nil).await.unwrap(),
        vec![Value::Nil]
    );
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        all(&ch, LEAN, "echo", Value::Binary(mib.clone()))
            .await
            .unwrap(),
        vec![Value::Binary(mib)]
    );
    let big = all(&ch, LEAN, "big", Value::from(1u64 << 20))
        .await
        .unwrap();
    assert_eq!(big[0].as_slice().map(<[u8]>::len), Some(1 << 20));
    // Served and counted like any module.
    let st = status(&ch).await;
    let m = module_status(&st, LEAN).expect("lean module in status");
    assert_eq!(m.state, "running");
    assert_eq!(m.calls_served, 4);
    assert_eq!(m.calls_in_flight, 0);
}

#[tokio::test]
async fn streams_arrive_in_order_and_the_first_item_before_the_end() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();

    let items = all(&ch, LEAN, "count", Value::from(5000)).await.unwrap();
    assert_eq!(items, (0..5000).map(Value::from).collect::<Vec<_>>());

    // The second item comes an hour later: the first must not wait for it
    // (the bound on the wait fails the test if it does).
    let mut stream = call(
        &ch,
        LEAN,
        "count",
        map(&[("n", 2.into()), ("delay_ms", 3_600_000.into())]),
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("first item held back")
        .unwrap()
        .unwrap();
    assert_eq!(value(&first), Value::from(0));
}

#[tokio::test]
async fn errors_keep_code_and_message_and_follow_the_items_sent_before() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();

    let fail = map(&[
        ("code", "NotFound".into()),
        ("message", "no such thing".into()),
    ]);
    let e = all(&ch, LEAN, "fail", fail).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "no such thing"));

    // Mid-stream: the items first, then the error.
    let mut stream = call(
        &ch,
        LEAN,
        "count",
        map(&[("n", 10.into()), ("fail_after", 3.into())]),
    )
    .await
    .unwrap();
    let mut got = vec![];
    let err = loop {
        match stream.next().await.expect("stream ended without the error") {
            Ok(item) => got.push(value(&item)),
            Err(e) => break e,
        }
    };
    assert_eq!(got, vec![Value::from(0), Value::from(1), Value::from(2)]);
    assert_eq!(
        (err.code(), err.message()),
        (Code::Aborted, "failed after 3 items")
    );

    let e = all(&ch, LEAN, "nope", Value::Nil).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("has no function 'nope'"), "{e:?}");
    let e = all(&ch, LEAN, "count", "x".into()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("echo.count expects"), "{e:?}");
    // The module is fine after all that.
    assert_eq!(
        all(&ch, LEAN, "echo", 1.into()).await.unwrap(),
        vec![Value::from(1)]
    );
}

#[tokio::test]
async fn a_caller_going_away_cancels_the_call_in_the_module() {
    let sb = sandbox();
    sb.add_faulty_module("holder", &[]);
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();

    // A long stream, dropped after its first item.
    let mut stream = call(
        &ch,
        LEAN,
        "count",
        map(&[("n", 1_000_000.into()), ("delay_ms", 10.into())]),
    )
    .await
    .unwrap();
    stream.next().await.unwrap().unwrap();
    assert_eq!(in_flight(&status(&ch).await, LEAN), Some(1));
    drop(stream);
    eventually(WAIT, "the lean call to leave", || async {
        (in_flight(&status(&ch).await, LEAN) == Some(0)).then_some(())
    })
    .await;

    // What the module was doing stops too: the lean module relays a call
    // that never ends to np-faulty, which counts its cancellations. Only
    // the lean module's call being aborted drops that inner call.
    let hold = map(&[("module", "holder".into()), ("function", "hold".into())]);
    let relay = call(&ch, LEAN, "relay", hold).await.unwrap();
    eventually(WAIT, "the held call to reach the holder", || async {
        (in_flight(&status(&ch).await, "holder") == Some(1)).then_some(())
    })
    .await;
    drop(relay);
    eventually(WAIT, "the holder's call to be cancelled", || async {
        let n = all(&ch, "holder", "cancelled", Value::Nil).await.ok()?;
        (n == vec![Value::from(1)]).then_some(())
    })
    .await;
    eventually(WAIT, "no call left in flight", || async {
        let st = status(&ch).await;
        (in_flight(&st, LEAN) == Some(0) && st.calls_in_flight == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_crash_mid_stream_names_the_exit_and_the_next_call_respawns() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = pid_of(&ch, LEAN).await;

    let mut stream = call(
        &ch,
        LEAN,
        "count",
        map(&[("n", 10.into()), ("crash_after", 3.into())]),
    )
    .await
    .unwrap();
    let mut got = vec![];
    let err = loop {
        match stream.next().await.expect("stream ended without an error") {
            Ok(item) => got.push(value(&item)),
            Err(e) => break e,
        }
    };
    assert_eq!(got, vec![Value::from(0), Value::from(1), Value::from(2)]);
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("exit status 101"), "{err:?}");

    let second = pid_of(&ch, LEAN).await;
    assert_ne!(first, second, "the crashed process was reused");
    assert_eq!(
        all(&ch, LEAN, "echo", "again".into()).await.unwrap(),
        vec![Value::from("again")]
    );
}

#[tokio::test]
async fn a_grpc_only_module_declared_lean_fails_clearly() {
    let sb = Sandbox::new();
    // np-faulty speaks gRPC whatever NORGOPOLIS_TRANSPORT says.
    sb.add_lean_module("liar", &bin("np-faulty"), &[]);
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();

    let err = all(&ch, "liar", "echo", Value::Nil).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("module 'liar' declares transport = \"lean\" but")
            && err.message().contains("speaks gRPC"),
        "{err:?}"
    );
    let st = status(&ch).await;
    assert!(
        st.recent_failures
            .iter()
            .any(|f| f.module == "liar" && f.reason.contains("transport = \"lean\"")),
        "{:?}",
        st.recent_failures
    );
    // Killed, and the server goes on routing.
    eventually(WAIT, "the liar to be reaped", || async {
        children_of(server.pid).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        all(&ch, "echo", "echo", 1.into()).await.unwrap(),
        vec![Value::from(1)]
    );
    // Each call tries again, and fails the same way.
    let again = all(&ch, "liar", "echo", Value::Nil).await.unwrap_err();
    assert!(
        again.message().contains("transport = \"lean\""),
        "{again:?}"
    );
}

#[tokio::test]
async fn modules_call_each_other_across_transports() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let relay = |module: &str, function: &str, args: Value| {
        map(&[
            ("module", module.into()),
            ("function", function.into()),
            ("args", args),
        ])
    };

    // lean -> gRPC, gRPC -> lean, lean -> lean (itself: a nested call).
    for (outer, inner) in [(LEAN, "echo"), ("echo", LEAN), (LEAN, LEAN)] {
        assert_eq!(
            all(&ch, outer, "relay", relay(inner, "count", 3.into()))
                .await
                .unwrap(),
            vec![Value::from(0), Value::from(1), Value::from(2)],
            "{outer} -> {inner}"
        );
        let fail = map(&[
            ("code", "PermissionDenied".into()),
            ("message", "no".into()),
        ]);
        let e = all(&ch, outer, "relay", relay(inner, "fail", fail))
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::PermissionDenied, "no"));
    }
}

#[tokio::test]
async fn a_lean_module_that_stops_answering_is_failed_and_killed() {
    let sb = sandbox();
    sb.write_config("module_ping_interval = \"250ms\"\nmodule_ping_timeout = \"1s\"\n");
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = pid_of(&ch, LEAN).await;

    // Frozen: nothing it does answers any more, pongs included.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let err = all(&ch, LEAN, "echo", Value::Nil).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("stopped answering"), "{err:?}");
    assert!(
        wait_pid_exit(first, WAIT).await,
        "hung module {first} not killed"
    );
    assert_ne!(pid_of(&ch, LEAN).await, first);
}

#[tokio::test]
async fn oversized_results_fail_only_their_call() {
    let sb = sandbox();
    sb.write_config("max_message_size = 65536\n");
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = pid_of(&ch, LEAN).await;

    let err = all(&ch, LEAN, "big", Value::from(100_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("module 'lecho'") && err.message().contains("max_message_size"),
        "{err:?}"
    );
    assert_eq!(
        all(&ch, LEAN, "big", Value::from(1000))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(pid_of(&ch, LEAN).await, first, "the module was restarted");
}

#[tokio::test]
async fn the_callers_deadline_reaches_a_lean_module() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    let mut forwarder = raw_forwarder(raw_channel(&sb.socket).await.unwrap());
    let mut request = tonic::Request::new(norgopolis_proto::communication::Invocation {
        module: LEAN.into(),
        function_name: "sleep".into(),
        args: args(Value::from(3_600_000)),
    });
    request.set_timeout(Duration::from_millis(300));
    let result = tokio::time::timeout(WAIT, async {
        let mut stream = forwarder.forward(request).await?.into_inner();
        stream.message().await
    })
    .await
    .expect("the deadline was not honoured");
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let ch = sb.channel().await.unwrap();
    eventually(WAIT, "the expired call to leave", || async {
        (in_flight(&status(&ch).await, LEAN) == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_caller_that_stops_reading_holds_up_only_its_own_call() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    stalled_caller_holds_up_only_itself(&sb, LEAN).await;
}

/// The same over gRPC (HTTP/2's own windows), for comparison.
#[tokio::test]
async fn over_grpc_too_a_caller_that_stops_reading_holds_up_only_its_own_call() {
    let sb = sandbox();
    let _server = sb.start_server(&[]);
    stalled_caller_holds_up_only_itself(&sb, "echo").await;
}

async fn stalled_caller_holds_up_only_itself(sb: &Sandbox, module: &str) {
    let ch = sb.channel().await.unwrap();
    // One caller takes the first item of an endless-looking stream and
    // then reads nothing; its 1 KiB windows fill after a few dozen items.
    let narrow = connect_narrow(&sb.socket, 1024).await.unwrap();
    let mut stalled = call(&narrow, module, "count", Value::from(100_000_000u64))
        .await
        .unwrap();
    assert!(stalled.next().await.is_some());
    // Meanwhile the module's other callers are served, all along: long
    // enough for the module to have filled every queue and pipe between
    // it and the stalled caller many times over.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        let echoed = tokio::time::timeout(
            Duration::from_secs(5),
            call_all(&ch, module, "echo", Value::from(n)),
        )
        .await
        .expect("held up behind a caller that stopped reading")
        .unwrap();
        assert_eq!(echoed, vec![Value::from(n)]);
        n += 1;
    }
    // The stalled call is still alive, and ends when its caller leaves.
    assert_eq!(in_flight(&status(&ch).await, module), Some(1));
    drop(stalled);
    eventually(WAIT, "the stalled call to end", || async {
        (in_flight(&status(&ch).await, module) == Some(0)).then_some(())
    })
    .await;
}
