//! Callers that stop reading, vanish or send values out of range: each
//! holds back only itself, what it had queued is freed, and nothing of it
//! reaches other callers as a hang. Real server, real echo module, real
//! CLI processes stopped with SIGSTOP.

mod support;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use norgopolis_proto::{
    communication::{forwarder_client::ForwarderClient, Invocation},
    lean_frame::{Frame, FrameReader, Incoming},
};
use norgopolis_tests::*;
use rmpv::Value;
use support::{cli_callers, raw_lean, send, signal, WAIT};
use tokio::net::unix::OwnedReadHalf;
use tonic::Code;

/// A stream long enough that no buffer on the way holds it.
const ENDLESS: u64 = 10_000_000;

async fn echo_in_flight(channel: &tonic::transport::Channel) -> u32 {
    let status = status(channel).await;
    module_status(&status, "echo").map_or(0, |m| m.calls_in_flight)
}

/// Runs `echo echo` on a fresh connection; panics if it does not finish.
async fn fresh_echo(sb: &Sandbox, what: &str) {
    let channel = connect(&sb.socket).await.unwrap();
    let Ok(done) =
        tokio::time::timeout(WAIT, call_all(&channel, "echo", "echo", Value::from(7))).await
    else {
        panic!("a fresh call waited behind {what}");
    };
    assert_eq!(done.unwrap(), vec![Value::from(7)]);
}

#[tokio::test]
async fn stopped_callers_of_a_long_stream_do_not_hold_up_a_fresh_call() {
    let sb = Sandbox::new();
    // Fewer slots than stopped callers: every slot would be held.
    sb.write_config("max_calls_per_module = 4\n");
    let server = sb.start_server(&[]);
    let channel = connect(&sb.socket).await.unwrap();
    let callers = cli_callers(&sb, 6, ENDLESS);
    eventually(WAIT, "the callers' calls to run", || async {
        (echo_in_flight(&channel).await >= 4).then_some(())
    })
    .await;
    for child in &callers.0 {
        signal(child.id(), libc::SIGSTOP);
    }
    fresh_echo(&sb, "SIGSTOPped callers").await;
    // Woken up, the stopped callers go on with their streams.
    for child in &callers.0 {
        signal(child.id(), libc::SIGCONT);
    }
    fresh_echo(&sb, "resumed callers").await;
    assert!(pid_alive(server.pid));
}

/// More stalled callers than twice the module's slots: the paused calls
/// that could not give their slot back are cancelled after `stall_timeout`,
/// so the line moves and a fresh call still gets through.
#[tokio::test]
async fn more_stopped_callers_than_slots_can_hold_are_cancelled_after_stall_timeout() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_module = 2\nstall_timeout = \"300ms\"\n");
    let server = sb.start_server(&[]);
    let channel = connect(&sb.socket).await.unwrap();
    let callers = cli_callers(&sb, 8, ENDLESS);
    // Every caller's call has reached the module or its line.
    eventually(WAIT, "the callers' calls to arrive", || async {
        let status = status(&channel).await;
        let echo = module_status(&status, "echo")?;
        (echo.calls_in_flight + echo.calls_queued >= 8).then_some(())
    })
    .await;
    for child in &callers.0 {
        signal(child.id(), libc::SIGSTOP);
    }
    fresh_echo(&sb, "more stopped callers than slots and paused places").await;
    assert!(pid_alive(server.pid));
}

fn msgpack(v: Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &v).unwrap();
    buf
}

fn route(id: u32, function: &str, arg: Value, deadline_ms: Option<u64>) -> Frame {
    Frame::Route {
        id,
        module: "echo".into(),
        function: function.into(),
        args: msgpack(arg),
        deadline_ms,
    }
}

#[tokio::test]
async fn unread_lean_calls_on_one_connection_do_not_hold_up_another() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let channel = connect(&sb.socket).await.unwrap();
    // As many calls as the module has slots (128 by default), never read.
    let (_frames, mut write) = raw_lean(&sb.socket).await;
    for id in 0..128 {
        send(&mut write, route(id, "count", Value::from(ENDLESS), None)).await;
    }
    eventually(WAIT, "the unread calls to run", || async {
        (echo_in_flight(&channel).await >= 128).then_some(())
    })
    .await;
    fresh_echo(&sb, "128 unread lean calls").await;
}

#[tokio::test]
async fn unread_grpc_calls_on_one_connection_do_not_hold_up_another() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_module = 8\n");
    let _server = sb.start_server(&[]);
    let channel = connect(&sb.socket).await.unwrap();
    let unread = connect(&sb.socket).await.unwrap();
    let mut streams = vec![];
    for _ in 0..8 {
        let started = ForwarderClient::new(unread.clone())
            .forward(Invocation {
                module: "echo".into(),
                function_name: "count".into(),
                args: args(Value::from(ENDLESS)),
            })
            .await
            .unwrap();
        streams.push(started.into_inner());
    }
    eventually(WAIT, "the unread calls to run", || async {
        (echo_in_flight(&channel).await >= 8).then_some(())
    })
    .await;
    fresh_echo(&sb, "unread gRPC calls").await;
    drop(streams);
}

/// The first ERROR or END frame of call `id`, skipping its items.
async fn ending(frames: &mut FrameReader<OwnedReadHalf>, id: u32) -> Frame {
    loop {
        let next = tokio::time::timeout(WAIT, frames.next())
            .await
            .expect("the call hangs");
        match next {
            Ok(Some(Incoming::Frame(f @ (Frame::Error { .. } | Frame::End { .. }))))
                if frame_id(&f) == id =>
            {
                return f
            }
            Ok(Some(_)) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

fn frame_id(f: &Frame) -> u32 {
    match f {
        Frame::Error { id, .. } | Frame::End { id } => *id,
        _ => u32::MAX,
    }
}

#[tokio::test]
async fn a_route_deadline_out_of_range_is_invalid_argument() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let (mut frames, mut write) = raw_lean(&sb.socket).await;
    send(&mut write, route(1, "echo", Value::from(1), Some(u64::MAX))).await;
    match ending(&mut frames, 1).await {
        Frame::Error { code, message, .. } => {
            assert_eq!(code, Code::InvalidArgument as i32, "{message}");
            assert!(message.contains("deadline"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // The connection goes on, and a sane deadline works.
    send(&mut write, route(2, "echo", Value::from(2), Some(60_000))).await;
    assert_eq!(ending(&mut frames, 2).await, Frame::End { id: 2 });
}

#[tokio::test]
async fn events_queued_for_a_session_that_does_not_read_are_bounded() {
    use norgopolis_proto::v1::{control_client::ControlClient, PublishRequest};
    const EVENT: usize = 30 << 20;
    let sb = Sandbox::new();
    let server = sb.start_server(&[]);
    // A session on a connection of its own, never read: a hung front end.
    let stalled = connect(&sb.socket).await.unwrap();
    let _session = attach(&stalled, true).await.unwrap();
    let mut publisher = ControlClient::new(connect(&sb.socket).await.unwrap());
    let before = rss_kib(server.pid);
    for _ in 0..13 {
        let delivered = publisher
            .publish(PublishRequest {
                module: "burst".into(),
                topic: "big".into(),
                payload: vec![7; EVENT],
            })
            .await
            .expect("publish")
            .into_inner()
            .delivered;
        assert!(delivered <= 1);
    }
    let grown = rss_kib(server.pid).saturating_sub(before) / 1024;
    eprintln!("server RSS grew {grown} MiB for 13 x 30 MiB events to a stopped session");
    // A copy per queued event would be 390 MiB; a bounded queue holds a
    // few events (in the queue, in HTTP/2's send buffer, being decoded).
    assert!(grown < 250, "server RSS grew {grown} MiB");
}

/// Server RSS in KiB once its calls have ended.
async fn settled_rss(channel: &tonic::transport::Channel, pid: u32) -> u64 {
    eventually(WAIT, "the callers' calls to end", || async {
        (echo_in_flight(channel).await == 0).then_some(())
    })
    .await;
    rss_kib(pid)
}

/// A lean caller of `count n` that reads as fast as it can, granting
/// credit as it goes; bumps `busy` once it has had `enough` results.
async fn reading_caller(socket: &Path, n: u64, enough: u64, busy: Arc<AtomicUsize>) {
    let (mut frames, mut write) = raw_lean(socket).await;
    send(&mut write, route(1, "count", Value::from(n), None)).await;
    let mut seen = 0u64;
    while let Ok(Some(Incoming::Frame(Frame::Item { .. }))) = frames.next().await {
        seen += 1;
        if seen.is_multiple_of(32) {
            send(&mut write, Frame::Credit { id: 1, items: 32 }).await;
        }
        if seen == enough {
            busy.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn memory_of_callers_that_vanish_mid_stream_is_returned() {
    let sb = Sandbox::new();
    let server = sb.start_server(&[]);
    let channel = connect(&sb.socket).await.unwrap();
    // Warm up: the module runs, the runtime's threads exist.
    fresh_echo(&sb, "nothing").await;
    let before = settled_rss(&channel, server.pid).await;
    let mut growths = vec![];
    for _round in 0..2 {
        let busy = Arc::new(AtomicUsize::new(0));
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..300 {
            let (socket, busy) = (sb.socket.clone(), busy.clone());
            callers.spawn(async move { reading_caller(&socket, 1_000_000, 1_000, busy).await });
        }
        // Streams are flowing (more callers than the module's 128 slots
        // wait in line), then all callers vanish at once.
        eventually(
            2 * WAIT,
            "100 callers to be well into their streams",
            || {
                let busy = busy.clone();
                async move { (busy.load(Ordering::SeqCst) >= 100).then_some(()) }
            },
        )
        .await;
        callers.shutdown().await;
        let peak = settled_rss(&channel, server.pid).await;
        // What the vanished callers held is given back soon after.
        let returned = tokio::time::timeout(WAIT, async {
            loop {
                let now = rss_kib(server.pid);
                if now.saturating_sub(before) < 24 * 1024 {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let after = returned.unwrap_or_else(|_| rss_kib(server.pid));
        growths.push((peak / 1024, after.saturating_sub(before) / 1024));
    }
    eprintln!(
        "server RSS from {} MiB, after each round of 300 vanished callers \
         (when the calls ended MiB, growth left MiB): {growths:?}",
        before / 1024
    );
    let (_, left) = growths.last().copied().unwrap_or_default();
    assert!(left < 24, "server RSS stays {left} MiB above where it was");
}

#[tokio::test]
async fn oversized_arguments_name_the_limit_on_both_transports() {
    let sb = Sandbox::new();
    sb.write_config("max_message_size = 65536\n");
    let _server = sb.start_server(&[]);
    let big = Value::Binary(vec![7; 100_000]);
    let grpc = call_all(
        &connect(&sb.socket).await.unwrap(),
        "echo",
        "echo",
        big.clone(),
    )
    .await
    .unwrap_err();
    let (mut frames, mut write) = raw_lean(&sb.socket).await;
    send(&mut write, route(1, "echo", big, None)).await;
    let Frame::Error { code, message, .. } = ending(&mut frames, 1).await else {
        panic!("oversized arguments were accepted over lean");
    };
    for (transport, code, message) in [
        ("gRPC", grpc.code() as i32, grpc.message()),
        ("lean", code, message.as_str()),
    ] {
        assert_eq!(
            code,
            Code::ResourceExhausted as i32,
            "{transport}: {message}"
        );
        assert!(
            message.contains("max_message_size") && message.contains("65536"),
            "{transport}: {message}"
        );
    }
    // Both connections go on.
    fresh_echo(&sb, "an oversized call").await;
    send(&mut write, route(2, "echo", Value::from(2), None)).await;
    assert_eq!(ending(&mut frames, 2).await, Frame::End { id: 2 });
}
