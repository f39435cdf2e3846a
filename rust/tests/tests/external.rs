//! External modules: running processes that register themselves as a
//! module over the socket (`PROVIDE`) and serve calls until they leave.
//! The provider is the real echo module in `--provide NAME` mode (the Rust
//! SDK's `Module::provide`), against a real server.

mod providers;
mod support;

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::{Command, Output, Stdio},
};

use futures::StreamExt;
use norgopolis_client::{Client, ClientError, Code};
use norgopolis_tests::{bin, Sandbox, ServerProc};
use providers::{module_status, registered, Provider};
use rmpv::Value;
use support::{client, WAIT};

/// A call's one result.
async fn call1<A, R>(c: &Client, module: &str, function: &str, args: &A) -> Result<R, ClientError>
where
    A: serde::Serialize + ?Sized,
    R: serde::de::DeserializeOwned + 'static,
{
    let results: Vec<R> = c.call(module, function, args).await?;
    Ok(results.into_iter().next().expect("one result"))
}

fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("norgopolis"));
    sb.env(&mut cmd);
    cmd.args(args).stdin(Stdio::null());
    cmd.output().expect("run norgopolis")
}

/// A server, and an attached client that keeps it alive.
async fn server(sb: &Sandbox) -> (ServerProc, Client) {
    let server = sb.start_server_logged(&[]);
    let c = client(sb).await;
    (server, c)
}

#[tokio::test]
async fn a_provider_is_called_like_any_module_from_clients_and_the_cli() {
    let sb = Sandbox::new();
    let (_server, c) = server(&sb).await;
    let provider = Provider::echo(&sb, "ext");
    let status = registered(&c, "ext").await;
    // The pid is the provider's own, from the socket's credentials.
    assert_eq!(status.pid, provider.pid());
    assert_eq!(status.path, format!("external (pid {})", provider.pid()));

    let echoed: Value = call1(&c, "ext", "echo", &"hi").await.unwrap();
    assert_eq!(echoed, Value::from("hi"));
    let pid: u32 = call1(&c, "ext", "pid", &()).await.unwrap();
    assert_eq!(pid, provider.pid(), "the call ran in the provider");
    let mut items = c.invoke::<_, u64>("ext", "count", &5).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = items.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    let err = call1::<_, Value>(&c, "ext", "fail", &field_map("NotFound", "as asked"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let out = cli(&sb, &["call", "ext", "count", "3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n");

    // `list` shows it with the functions it declared; `status` as external.
    let list = c.list_modules().await.unwrap();
    let listed = list.modules.iter().find(|m| m.name == "ext").unwrap();
    assert!(listed.loaded);
    assert!(listed.functions.iter().any(|f| f == "count"), "{listed:?}");
    let out = cli(&sb, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("running (external)"), "{text}");
}

fn field_map(code: &str, message: &str) -> Value {
    Value::Map(vec![
        ("code".into(), code.into()),
        ("message".into(), message.into()),
    ])
}

#[tokio::test]
async fn a_taken_name_is_refused_and_the_first_provider_keeps_serving() {
    let sb = Sandbox::new();
    let (_server, c) = server(&sb).await;
    let first = Provider::echo(&sb, "ext");
    registered(&c, "ext").await;

    let mut second = Provider::echo(&sb, "ext");
    let (code, err) = second.ended().await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("AlreadyExists"), "{err}");
    assert!(
        err.contains(&format!(
            "another process provides it (pid {})",
            first.pid()
        )),
        "{err}"
    );
    let pid: u32 = call1(&c, "ext", "pid", &()).await.unwrap();
    assert_eq!(pid, first.pid());

    // A module the server runs is taken too.
    let _: Value = call1(&c, "echo", "echo", &()).await.unwrap();
    let mut shadow = Provider::echo(&sb, "echo");
    let (code, err) = shadow.ended().await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the server runs it as a module"), "{err}");

    // And a bad name is refused, naming what is wrong.
    let mut bad = Provider::echo(&sb, "no/slashes");
    let (code, err) = bad.ended().await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("InvalidArgument"), "{err}");
}

#[tokio::test]
async fn providers_racing_for_one_name_leave_exactly_one_registered() {
    let sb = Sandbox::new();
    let (_server, c) = server(&sb).await;
    let mut racers: Vec<Provider> = (0..4).map(|_| Provider::echo(&sb, "raced")).collect();
    let winner = registered(&c, "raced").await;
    let mut refused = 0;
    for racer in racers.iter_mut() {
        if racer.pid() == winner.pid {
            continue;
        }
        let (code, err) = racer.ended().await;
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("AlreadyExists"), "{err}");
        refused += 1;
    }
    assert_eq!(refused, 3);
    let winner_proc = racers.iter_mut().find(|r| r.pid() == winner.pid).unwrap();
    assert!(winner_proc.child.try_wait().unwrap().is_none());
    let pid: u32 = call1(&c, "raced", "pid", &()).await.unwrap();
    assert_eq!(pid, winner.pid);
}

#[tokio::test]
async fn a_provider_killed_mid_stream_fails_its_calls_and_frees_the_name() {
    let sb = Sandbox::new();
    let (_server, c) = server(&sb).await;
    let mut provider = Provider::echo(&sb, "ext");
    registered(&c, "ext").await;

    let args = Value::Map(vec![
        ("n".into(), 1_000_000.into()),
        ("delay_ms".into(), 5.into()),
    ]);
    let mut items = c.invoke::<_, u64>("ext", "count", &args).await.unwrap();
    for expected in 0..2u64 {
        assert_eq!(items.next().await.unwrap().unwrap(), expected);
    }
    let pid = provider.pid();
    provider.kill();
    let err = loop {
        match tokio::time::timeout(WAIT, items.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(err))) => break err,
            Ok(None) => panic!("the stream ended without an error"),
            Err(_) => panic!("the call did not fail"),
        }
    };
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        err.message()
            .contains(&format!("its provider (pid {pid}) left")),
        "{err}"
    );

    // The name is free at once: no module of that name on disk...
    let err = call1::<_, Value>(&c, "ext", "echo", &()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    // ...and a new provider takes it.
    let again = Provider::echo(&sb, "ext");
    let status = registered(&c, "ext").await;
    assert_eq!(status.pid, again.pid());
    let pid: u32 = call1(&c, "ext", "pid", &()).await.unwrap();
    assert_eq!(pid, again.pid());
}

#[tokio::test]
async fn the_server_never_signals_a_provider_unload_and_shutdown_close_its_connection() {
    let sb = Sandbox::new();
    let (mut server, c) = server(&sb).await;
    let mut provider = Provider::echo(&sb, "ext");
    registered(&c, "ext").await;

    // Unload closes its connection; the provider ends by itself.
    assert!(c.unload("ext").await.unwrap());
    let (code, err) = provider.ended().await;
    assert_eq!(code, Some(1), "ended by a signal? {err}");
    assert!(err.contains("closed the connection"), "{err}");
    assert!(module_status(&c, "ext")
        .await
        .is_none_or(|m| m.state != "running"));

    // Server shutdown: the connection closes, nothing is killed.
    let mut provider = Provider::echo(&sb, "ext");
    registered(&c, "ext").await;
    c.shutdown("test").await.unwrap();
    let (code, err) = provider.ended().await;
    assert_eq!(code, Some(1), "ended by a signal? {err}");
    assert!(server.exited_within(WAIT).await);
}

#[tokio::test]
async fn another_user_cannot_provide() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let sb = Sandbox::new();
    let (_server, c) = server(&sb).await;
    // Opened up, so only the server's own peer check stands in the way.
    for dir in [sb.dir.path(), sb.runtime.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&sb.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A raw PROVIDE (the SDK would refuse the root server first): hello,
    // then PROVIDE id=1 "ext" with no functions; prints what comes back.
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
hello = bytes([9,0,0,0, 0,0,0,0, 0]) + b"NPL1"
name = b"ext"
payload = len(name).to_bytes(2, "little") + name + (0).to_bytes(2, "little")
frame = (5 + len(payload)).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes([10]) + payload
got = b""
try:
    s.sendall(hello + frame)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except (BrokenPipeError, ConnectionResetError):
    pass
print(got.hex())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&sb.socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 as nobody");
    assert!(out.status.success(), "{out:?}");
    // Closed unanswered: not even a hello.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "{out:?}");
    assert!(module_status(&c, "ext").await.is_none());
    let err = call1::<_, Value>(&c, "ext", "echo", &()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
