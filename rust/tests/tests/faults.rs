//! Faulty modules and the limits: a module that breaks the protocol, hangs,
//! crash-loops or ignores SIGTERM; deadlines; per-module queues,
//! per-connection and session limits, message sizes; stderr floods.
//! Everything runs against the real server with real module processes
//! (`np-faulty`, `echo`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use norgopolis_proto::{
    communication::{forwarder_client::ForwarderClient, Invocation},
    v1::{control_client::ControlClient, UnloadRequest},
};
use norgopolis_tests::*;
use rmpv::Value;
use tonic::Code;

const LONG: Duration = Duration::from_secs(20);

async fn pid_of(ch: &tonic::transport::Channel, module: &str) -> u32 {
    let v = call_all(ch, module, "pid", Value::Nil).await.unwrap();
    v[0].as_u64().unwrap() as u32
}

async fn unload(ch: &tonic::transport::Channel, name: &str) -> bool {
    ControlClient::new(ch.clone())
        .unload(UnloadRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .was_loaded
}

/// A call whose request carries a `grpc-timeout`, on a raw HTTP/2
/// connection: tonic's client transport would also run a timer of its own,
/// and the test is about the server's.
async fn call_with_timeout(
    sb: &Sandbox,
    module: &str,
    function: &str,
    timeout: Duration,
) -> Result<Vec<Value>, tonic::Status> {
    let mut request = tonic::Request::new(Invocation {
        module: module.into(),
        function_name: function.into(),
        args: args(Value::Nil),
    });
    request.set_timeout(timeout);
    let raw = raw_channel(&sb.socket).await.expect("raw connection");
    let mut stream = raw_forwarder(raw).forward(request).await?.into_inner();
    let mut out = vec![];
    while let Some(item) = stream.next().await {
        out.push(value(&item?));
    }
    Ok(out)
}

#[tokio::test]
async fn stray_stdout_marks_the_module_failed_kills_it_and_the_next_call_starts_fresh() {
    let sb = Sandbox::new();
    sb.add_faulty_module("garbler", &[]);
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = pid_of(&ch, "garbler").await;

    let err = call_all(&ch, "garbler", "garbage", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("module 'garbler' failed") && err.message().contains("not HTTP/2"),
        "{err:?}"
    );
    assert!(
        wait_pid_exit(first, LONG).await,
        "the broken module {first} was not killed"
    );
    let st = status(&ch).await;
    let failure = st
        .recent_failures
        .iter()
        .find(|f| f.module == "garbler")
        .expect("failure reported in Status");
    assert_eq!(failure.pid, first);
    assert!(failure.reason.contains("stray print"), "{failure:?}");

    let second = pid_of(&ch, "garbler").await;
    assert_ne!(first, second, "the failed process was reused");
    assert!(!children_of(server.pid).contains(&first));
}

#[tokio::test]
async fn garbage_before_the_handshake_fails_the_call_clearly() {
    let sb = Sandbox::new();
    sb.add_faulty_module("banner", &["--garbage-at-start"]);
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = call_all(&ch, "banner", "echo", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not HTTP/2"), "{err:?}");
    // The process is gone and the server still routes other modules.
    eventually(LONG, "the banner module to be reaped", || async {
        children_of(server.pid).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        call_all(&ch, "echo", "echo", Value::from(1)).await.unwrap(),
        vec![Value::from(1)]
    );
}

#[tokio::test]
async fn a_module_that_stops_answering_is_failed_and_killed() {
    let sb = Sandbox::new();
    sb.write_config("module_ping_interval = \"250ms\"\nmodule_ping_timeout = \"1s\"\n");
    sb.add_faulty_module("hanger", &[]);
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = pid_of(&ch, "hanger").await;

    let err = call_all(&ch, "hanger", "hang", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("stopped answering"), "{err:?}");
    assert!(
        wait_pid_exit(first, LONG).await,
        "hung module {first} not killed"
    );
    let st = status(&ch).await;
    assert!(
        st.recent_failures
            .iter()
            .any(|f| f.module == "hanger" && f.reason.contains("stopped answering")),
        "{:?}",
        st.recent_failures
    );
    assert_ne!(pid_of(&ch, "hanger").await, first);
}

#[tokio::test]
async fn a_crash_loop_fails_each_call_clearly_and_leaks_nothing() {
    let sb = Sandbox::new();
    sb.add_faulty_module("crasher", &["--crash-at-start", "7"]);
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    // Warm up so the baseline holds the echo module's pipes.
    call_all(&ch, "echo", "echo", Value::Nil).await.unwrap();
    let baseline = fd_count(server.pid);

    for _ in 0..20 {
        let err = call_all(&ch, "crasher", "echo", Value::Nil)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("'crasher'") && err.message().contains("exit status 7"),
            "{err:?}"
        );
    }
    let echo_pid = children_of(server.pid);
    eventually(LONG, "crashed modules reaped and fds closed", || async {
        let children = children_of(server.pid);
        (children == echo_pid && fd_count(server.pid) <= baseline).then_some(())
    })
    .await;
    let st = status(&ch).await;
    let crashes = st
        .recent_failures
        .iter()
        .filter(|f| f.module == "crasher" && f.reason.contains("exit status 7"))
        .count();
    assert!(crashes >= 20, "{:?}", st.recent_failures);
    assert!(st.recent_failures.len() <= 32, "failure log is unbounded");
}

#[tokio::test]
async fn a_module_ignoring_sigterm_is_sigkilled() {
    let sb = Sandbox::new();
    sb.write_config("module_grace = \"300ms\"\n");
    sb.add_faulty_module("stubborn", &["--ignore-sigterm"]);
    let _server = sb.start_server_logged(&[]);
    let ch = sb.channel().await.unwrap();
    let pid = pid_of(&ch, "stubborn").await;
    assert!(unload(&ch, "stubborn").await);
    assert!(wait_pid_exit(pid, LONG).await, "module {pid} survived");
    let log = sb.log_text();
    assert!(log.contains("ignored SIGTERM; sending SIGKILL"), "{log}");
    assert!(log.contains("killed by signal 9 (SIGKILL)"), "{log}");
}

#[tokio::test]
async fn a_module_that_ignores_stdin_eof_gets_sigterm() {
    let sb = Sandbox::new();
    sb.write_config("module_grace = \"300ms\"\n");
    sb.add_faulty_module("lingerer", &["--stay-after-eof"]);
    let _server = sb.start_server_logged(&[]);
    let ch = sb.channel().await.unwrap();
    let pid = pid_of(&ch, "lingerer").await;
    assert!(unload(&ch, "lingerer").await);
    assert!(wait_pid_exit(pid, LONG).await, "module {pid} survived");
    let log = sb.log_text();
    assert!(
        log.contains("did not exit after stdin closed; sending SIGTERM"),
        "{log}"
    );
    assert!(log.contains("killed by signal 15 (SIGTERM)"), "{log}");
    assert!(!log.contains("ignored SIGTERM"), "{log}");
}

#[tokio::test]
async fn stderr_floods_are_rate_limited() {
    let sb = Sandbox::new();
    sb.write_config("stderr_lines_per_second = 10\n");
    sb.add_faulty_module("flooder", &[]);
    let _server = sb.start_server_logged(&[]);
    let ch = sb.channel().await.unwrap();
    let started = Instant::now();
    let n = call_all(&ch, "flooder", "flood", Value::from(5000))
        .await
        .unwrap();
    assert_eq!(n, vec![Value::from(5000)]);
    // The module is still fine, and so is the server.
    assert_eq!(
        call_all(&ch, "flooder", "echo", Value::from("ok"))
            .await
            .unwrap(),
        vec![Value::from("ok")]
    );
    let log = eventually(LONG, "the flood warning", || async {
        let log = sb.log_text();
        log.contains("stderr flood").then_some(log)
    })
    .await;
    let logged = log.lines().filter(|l| l.contains("flood line")).count();
    // A burst of twice the rate, then the rate, for the time that passed.
    let bound = 20 + (10.0 * started.elapsed().as_secs_f64()).ceil() as usize + 1;
    assert!(logged > 0, "nothing of the module's stderr was logged");
    assert!(
        logged <= bound,
        "{logged} lines logged, more than the limit allows ({bound})"
    );
}

#[tokio::test]
async fn the_callers_deadline_is_honoured_end_to_end() {
    let sb = Sandbox::new();
    sb.add_faulty_module("holder", &[]);
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = call_with_timeout(&sb, "holder", "hold", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("caller's deadline"), "{err:?}");
    // The module saw its call cancelled, and the server let go of it.
    eventually(LONG, "the module to see the cancellation", || async {
        let n = call_all(&ch, "holder", "cancelled", Value::Nil)
            .await
            .unwrap();
        (n[0].as_u64() >= Some(1)).then_some(())
    })
    .await;
    eventually(LONG, "no call in flight", || async {
        let st = status(&ch).await;
        (st.calls_in_flight == 0 && module_status(&st, "holder")?.calls_in_flight == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_server_call_timeout_applies_when_the_caller_sets_none() {
    let sb = Sandbox::new();
    sb.write_config("call_timeout = \"300ms\"\n");
    sb.add_faulty_module("holder", &[]);
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = call_all(&ch, "holder", "hold", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("call_timeout"), "{err:?}");
    // Quick calls are unaffected.
    assert_eq!(
        call_all(&ch, "holder", "echo", Value::from(3))
            .await
            .unwrap(),
        vec![Value::from(3)]
    );
}

#[tokio::test]
async fn calls_over_the_module_limit_wait_in_line_and_are_not_dropped() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_module = 2\n");
    sb.add_faulty_module("holder", &[]);
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = call(&ch, "holder", "hold", Value::Nil).await.unwrap();
    let _second = call(&ch, "holder", "hold", Value::Nil).await.unwrap();

    let ch2 = ch.clone();
    let queued =
        tokio::spawn(async move { call_all(&ch2, "holder", "echo", Value::from(9)).await });
    eventually(LONG, "the third call to wait in line", || async {
        let st = status(&ch).await;
        let m = module_status(&st, "holder")?;
        (m.calls_queued == 1 && m.calls_in_flight == 2).then_some(())
    })
    .await;
    // A caller in line with a deadline gives up with a clear reason.
    let err = call_with_timeout(&sb, "holder", "echo", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("waiting in line"), "{err:?}");

    drop(first);
    let result = tokio::time::timeout(LONG, queued)
        .await
        .expect("queued call never ran")
        .unwrap()
        .unwrap();
    assert_eq!(result, vec![Value::from(9)]);
}

#[tokio::test]
async fn calls_over_the_connection_limit_fail_for_that_caller_only() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_session = 2\n");
    sb.add_faulty_module("holder", &[]);
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = call(&ch, "holder", "hold", Value::Nil).await.unwrap();
    let _second = call(&ch, "holder", "hold", Value::Nil).await.unwrap();
    let err = call_all(&ch, "holder", "echo", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_calls_per_session"), "{err:?}");

    let other = sb.channel().await.unwrap();
    assert_eq!(
        call_all(&other, "holder", "echo", Value::from(1))
            .await
            .unwrap(),
        vec![Value::from(1)]
    );
    drop(first);
    eventually(LONG, "a free call slot on the connection", || async {
        call_all(&ch, "holder", "echo", Value::from(2)).await.ok()
    })
    .await;
}

#[tokio::test]
async fn sessions_over_the_limit_are_refused_clearly() {
    let sb = Sandbox::new();
    sb.write_config("max_sessions = 2\n");
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let a = attach(&ch, true).await.unwrap();
    let _b = attach(&ch, true).await.unwrap();
    let err = attach(&ch, true)
        .await
        .err()
        .expect("third session accepted");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_sessions"), "{err:?}");
    // Calls still work for everyone.
    call_all(&ch, "echo", "echo", Value::Nil).await.unwrap();
    drop(a);
    eventually(LONG, "a free session", || async {
        attach(&ch, true).await.ok()
    })
    .await;
}

#[tokio::test]
async fn oversized_messages_fail_only_their_call() {
    let sb = Sandbox::new();
    sb.write_config("max_message_size = 65536\n");
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();

    let err = call_all(&ch, "echo", "echo", Value::Binary(vec![7; 100_000]))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert!(err.message().contains("65536"), "{err:?}");

    let err = call_all(&ch, "echo", "big", Value::from(100_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("module 'echo'") && err.message().contains("max_message_size"),
        "{err:?}"
    );
    // The same connection and the module go on working.
    assert_eq!(
        call_all(&ch, "echo", "big", Value::from(1000))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn override_answers_unimplemented() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = ForwarderClient::new(ch)
        .r#override(norgopolis_proto::communication::InvocationOverride {
            module: "echo".into(),
            function_name: "echo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("Override"), "{err:?}");
    assert!(err.message().contains("echo.echo"), "{err:?}");
}

/// Kills a daemonized server when the test ends, however it ends.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn the_log_is_capped_and_rotated_while_running() {
    let sb = Sandbox::new();
    sb.write_config("log_max_size = 8192\nstderr_lines_per_second = 0\n");
    let mut cmd = std::process::Command::new(bin("norgopolis-server"));
    sb.env(&mut cmd);
    let (_parent, line) = spawn_with_ready(cmd).unwrap();
    let pid: u32 = line
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("daemon did not start: {line}"));
    let _daemon = Daemon(pid);
    let ch = sb.channel().await.unwrap();
    let filler = "x".repeat(1000);
    for i in 0..40 {
        call_all(
            &ch,
            "echo",
            "stderr",
            Value::from(format!("line {i:02} {filler}")),
        )
        .await
        .unwrap();
    }
    call_all(&ch, "echo", "stderr", Value::from("the last word"))
        .await
        .unwrap();
    let rotated = rotated(&sb.log);
    let (current, old) = eventually(LONG, "the last line in the log", || async {
        let current = std::fs::read_to_string(&sb.log).unwrap_or_default();
        let old = std::fs::read_to_string(&rotated).unwrap_or_default();
        (current.contains("the last word") || old.contains("the last word"))
            .then_some((current, old))
    })
    .await;
    // Each file holds at most the cap plus the record that crossed it.
    assert!(
        current.len() <= 8192 + 1200,
        "log is {} bytes",
        current.len()
    );
    assert!(
        old.len() >= 8192 && old.len() <= 8192 + 1200,
        "rotated log is {} bytes",
        old.len()
    );
    // Forty kilobytes went through: the older lines are gone for good.
    assert!(!current.contains("line 00 ") && !old.contains("line 00 "));
    drop(ch);
    ControlClient::new(sb.channel().await.unwrap())
        .shutdown(norgopolis_proto::v1::ShutdownRequest {
            reason: "test over".into(),
        })
        .await
        .unwrap();
    assert!(wait_pid_exit(pid, LONG).await);
}

/// `<log>.1`, where a rotated log goes.
fn rotated(log: &std::path::Path) -> std::path::PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".1");
    p.into()
}
