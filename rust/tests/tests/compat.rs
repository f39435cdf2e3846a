//! Compatibility with the public crates, unchanged: a client built on
//! `norgopolis-client` 0.6 (TCP host and port) and a module built on
//! `norgopolis-module` 2.0.3, both from the registry (see rust/compat;
//! `make build-compat` builds them into target/compat).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use norgopolis_proto::v1::{control_client::ControlClient, UnloadRequest};
use norgopolis_tests::*;
use rmpv::Value;
use tonic::Code;

const LONG: Duration = Duration::from_secs(30);

/// A compat fixture binary; fails with the command that builds it.
fn compat_bin(name: &str) -> PathBuf {
    let dir = bin_dir();
    let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    // target/<profile> -> target/compat/<profile>, falling back to debug.
    let target = dir.parent().expect("target dir").join("compat");
    for p in [
        target.join(profile).join(name),
        target.join("debug").join(name),
    ] {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} missing under {}: run `make build-compat` (needs protoc: apt-get install protobuf-compiler)",
        target.display()
    );
}

fn count_args(n: u64, delay_ms: u64) -> Value {
    Value::Map(vec![
        ("n".into(), n.into()),
        ("delay_ms".into(), delay_ms.into()),
    ])
}

/// Runs compat-client against `addr` and returns its stdout lines.
fn public_client(addr: &str, module: &str, function: &str, json: Option<&str>) -> Vec<String> {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new(compat_bin("compat-client"));
    cmd.args([host, port, module, function]);
    if let Some(j) = json {
        cmd.arg(j);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run compat-client");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn tcp_address(sb: &Sandbox) -> String {
    let ch = sb.channel().await.unwrap();
    status(&ch).await.tcp_address
}

#[tokio::test]
async fn the_public_client_calls_modules_over_tcp() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&["--listen-tcp", "127.0.0.1:0"]);
    let addr = tcp_address(&sb).await;

    assert_eq!(
        public_client(&addr, "echo", "echo", Some(r#"{"a":[1,2,"x"]}"#)),
        vec![r#"item {"a":[1,2,"x"]}"#, "done"]
    );
    assert_eq!(
        public_client(&addr, "echo", "count", Some("3")),
        vec!["item 0", "item 1", "item 2", "done"]
    );
    let failed = public_client(
        &addr,
        "echo",
        "fail",
        Some(r#"{"code":"NotFound","message":"nope"}"#),
    );
    assert_eq!(failed, vec!["error NotFound nope"]);
    let refused = public_client(&addr, "../evil", "x", None);
    assert!(
        refused[0].starts_with("error InvalidArgument"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_public_client_gets_items_as_they_are_produced() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&["--listen-tcp", "127.0.0.1:0"]);
    let addr = tcp_address(&sb).await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    // A stream that would take hours to end: a router that buffered whole
    // streams (as the public one does) could never show its first item.
    let mut child = Command::new(compat_bin("compat-client"))
        .args([
            host,
            port,
            "echo",
            "count",
            r#"{"n":100000,"delay_ms":100}"#,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            lines.push(line.trim_end().to_string());
        }
        lines
    });
    let lines = tokio::time::timeout(LONG, lines).await.unwrap().unwrap();
    assert_eq!(lines, vec!["item 0", "item 1", "item 2"]);
    child.kill().unwrap();
    child.wait().unwrap();
    // The caller left: its call ends on the server too.
    let ch = sb.channel().await.unwrap();
    eventually(LONG, "the abandoned call to end", || async {
        (status(&ch).await.calls_in_flight == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_module_on_the_public_crate_works_unchanged_and_is_reaped() {
    let sb = Sandbox::new();
    sb.write_config("module_grace = \"300ms\"\n");
    std::os::unix::fs::symlink(compat_bin("compat-module"), sb.modules.join("legacy")).unwrap();
    let mut server = sb.start_server_logged(&[]);
    let ch = sb.channel().await.unwrap();

    let nested = Value::Map(vec![(
        "list".into(),
        Value::Array(vec![Value::from(1), Value::from("two"), Value::Nil]),
    )]);
    assert_eq!(
        call_all(&ch, "legacy", "echo", nested.clone())
            .await
            .unwrap(),
        vec![nested]
    );
    let items = call_all(&ch, "legacy", "count", count_args(5, 0))
        .await
        .unwrap();
    assert_eq!(items, (0..5).map(Value::from).collect::<Vec<_>>());
    let err = call_all(&ch, "legacy", "fail", Value::from("no entry"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "no entry");
    let err = call_all(&ch, "legacy", "nope", Value::Nil)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // It never exits on stdin EOF by itself: unloading must escalate.
    let pid = call_all(&ch, "legacy", "pid", Value::Nil).await.unwrap()[0]
        .as_u64()
        .unwrap() as u32;
    let was = ControlClient::new(ch.clone())
        .unload(UnloadRequest {
            name: "legacy".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .was_loaded;
    assert!(was);
    assert!(
        wait_pid_exit(pid, LONG).await,
        "legacy module {pid} survived unload"
    );
    assert!(
        sb.log_text()
            .contains("did not exit after stdin closed; sending SIGTERM"),
        "{}",
        sb.log_text()
    );

    // Loaded again, it goes with the server when the server exits.
    let pid = call_all(&ch, "legacy", "pid", Value::Nil).await.unwrap()[0]
        .as_u64()
        .unwrap() as u32;
    drop(ch);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.exited_within(LONG).await, "server did not exit");
    assert!(
        wait_pid_exit(pid, LONG).await,
        "legacy module {pid} outlived the server"
    );
}
