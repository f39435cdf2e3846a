//! Server lifetime: sessions, linger, idle exit, crashes, kills, stale files.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

use futures::StreamExt;
use norgopolis_proto::v1::{
    control_client::ControlClient, server_message, ShutdownRequest, StatusRequest,
};
use norgopolis_tests::*;
use rmpv::Value;
use tonic::Code;

async fn status(ch: &tonic::transport::Channel) -> norgopolis_proto::v1::StatusReply {
    ControlClient::new(ch.clone())
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn echo_pid(ch: &tonic::transport::Channel) -> u32 {
    call_all(ch, "echo", "pid", Value::Nil).await.unwrap()[0]
        .as_u64()
        .unwrap() as u32
}

#[tokio::test]
async fn killing_one_client_leaves_the_other_working() {
    let sb = Sandbox::new();
    let server = sb.start_server(&["--linger", "100ms"]);
    let mut cmd = Command::new(bin("np-probe"));
    sb.env(&mut cmd);
    let mut first = cmd.arg("600000").stdout(Stdio::piped()).spawn().unwrap();
    let line = read_line_starting(&mut first, "attached ").unwrap();
    assert_eq!(line, format!("attached {}", server.pid));

    let ch = sb.channel().await.unwrap();
    let second = attach(&ch, true).await.unwrap();
    assert_eq!(status(&ch).await.sessions, 2);

    first.kill().unwrap();
    first.wait().unwrap();
    // Still the same server, still serving.
    assert_eq!(
        call_all(&ch, "echo", "echo", Value::from("hi"))
            .await
            .unwrap(),
        vec![Value::from("hi")]
    );
    let s = status(&ch).await;
    assert_eq!(s.pid, server.pid);
    assert_eq!(second.welcome.server_pid, server.pid);
    drop(second);
}

#[tokio::test]
async fn last_detach_ends_server_and_modules_within_linger() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&["--linger", "300ms"]);
    let ch = sb.channel().await.unwrap();
    let session = attach(&ch, true).await.unwrap();
    let module_pid = echo_pid(&ch).await;
    assert!(pid_alive(module_pid));
    drop(session);
    drop(ch);
    assert!(
        server
            .exited_within(Duration::from_millis(300 + 2000))
            .await,
        "server still running; log:\n{}",
        sb.log_text()
    );
    assert!(
        wait_pid_exit(module_pid, Duration::from_secs(1)).await,
        "module {module_pid} outlived the server"
    );
    assert!(!sb.socket.exists(), "socket left behind");
    assert!(
        !sb.runtime.join("server.pid").exists(),
        "pid file left behind"
    );
}

#[tokio::test]
async fn attach_during_linger_keeps_the_server() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&["--linger", "1s"]);
    let ch = sb.channel().await.unwrap();
    drop(attach(&ch, true).await.unwrap());
    // Well inside the linger: a new session cancels the exit.
    let session = attach(&ch, true).await.unwrap();
    assert!(
        !server.exited_within(Duration::from_millis(1500)).await,
        "server exited with a session attached"
    );
    assert_eq!(status(&ch).await.sessions, 1);
    drop(session);
    assert!(server.exited_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn server_without_sessions_exits_after_idle_timeout() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&["--idle-timeout", "300ms", "--linger", "60s"]);
    assert!(server.exited_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn module_sessions_do_not_keep_the_server_alive() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&["--linger", "100ms"]);
    let ch = sb.channel().await.unwrap();
    drop(attach(&ch, true).await.unwrap());
    let _module_like = attach(&ch, false).await.unwrap();
    assert!(server.exited_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn protocol_mismatch_is_a_clear_error() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let err = attach_with_version(&ch, true, 999)
        .await
        .err()
        .expect("attach accepted a foreign version");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("v999") && err.message().contains("v1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn shutdown_tells_sessions_why_and_stops_modules() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let mut session = attach(&ch, true).await.unwrap();
    let module_pid = echo_pid(&ch).await;
    ControlClient::new(ch.clone())
        .shutdown(ShutdownRequest {
            reason: "test over".into(),
        })
        .await
        .unwrap();
    // Lifecycle events (module.loaded, server.shutdown) come first.
    let msg = loop {
        let msg = session.inbound.next().await.unwrap().unwrap();
        if !matches!(msg.kind, Some(server_message::Kind::Event(_))) {
            break msg;
        }
    };
    match msg.kind {
        Some(server_message::Kind::Goodbye(g)) => assert!(g.reason.contains("test over"), "{g:?}"),
        other => panic!("expected Goodbye, got {other:?}"),
    }
    assert!(server.exited_within(Duration::from_secs(5)).await);
    assert!(wait_pid_exit(module_pid, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn server_sigkill_leaves_no_module_behind() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let module_pid = echo_pid(&ch).await;
    server.child.kill().unwrap(); // SIGKILL: no chance to clean up.
    server.child.wait().unwrap();
    assert!(
        wait_pid_exit(module_pid, Duration::from_secs(2)).await,
        "module {module_pid} orphaned"
    );
}

#[tokio::test]
async fn crash_mid_stream_is_a_clear_error_and_next_call_respawns() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first_pid = echo_pid(&ch).await;
    let arg = Value::Map(vec![
        (Value::from("n"), Value::from(10)),
        (Value::from("crash_after"), Value::from(2)),
    ]);
    let mut stream = call(&ch, "echo", "count", arg).await.unwrap();
    let mut items = vec![];
    let err = loop {
        match stream.next().await {
            Some(Ok(item)) => items.push(value(&item)),
            Some(Err(e)) => break e,
            None => panic!("stream ended without error after {items:?}"),
        }
    };
    assert_eq!(items, vec![Value::from(0), Value::from(1)]);
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("'echo'") && err.message().contains("exit status 101"),
        "{err:?}"
    );

    let second_pid = echo_pid(&ch).await;
    assert_ne!(first_pid, second_pid, "crashed module was not restarted");
}

#[tokio::test]
async fn crash_of_one_module_does_not_affect_another() {
    let sb = Sandbox::new();
    std::os::unix::fs::symlink(bin("echo"), sb.modules.join("other")).unwrap();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let other = call(
        &ch,
        "other",
        "count",
        Value::Map(vec![
            (Value::from("n"), Value::from(3)),
            (Value::from("delay_ms"), Value::from(200)),
        ]),
    );
    let mut other = other.await.unwrap();
    let err = call_all(&ch, "echo", "crash", Value::from(7))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("exit status 7"), "{err:?}");
    let mut got = vec![];
    while let Some(item) = other.next().await {
        got.push(value(&item.unwrap()));
    }
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn module_that_exits_on_its_own_is_loaded_again() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let first = echo_pid(&ch).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_pid_exit(first, Duration::from_secs(2)).await);
    let second = echo_pid(&ch).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn stale_socket_and_pid_file_are_replaced() {
    let sb = Sandbox::new();
    // A dead server's leftovers: a socket nobody listens on and a pid file.
    drop(std::os::unix::net::UnixListener::bind(&sb.socket).unwrap());
    std::fs::write(sb.runtime.join("server.pid"), "999999\n").unwrap();
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    assert_eq!(status(&ch).await.pid, server.pid);
    assert_eq!(
        std::fs::read_to_string(sb.runtime.join("server.pid"))
            .unwrap()
            .trim(),
        server.pid.to_string()
    );
}

#[tokio::test]
async fn foreign_file_at_socket_path_is_refused() {
    let sb = Sandbox::new();
    std::fs::write(&sb.socket, "not a socket").unwrap();
    let line = sb.start_server_expect_error(&[]);
    assert!(
        line.starts_with("error ") && line.contains("not a socket"),
        "{line}"
    );
    assert_eq!(std::fs::read_to_string(&sb.socket).unwrap(), "not a socket");
}

#[tokio::test]
async fn open_runtime_dir_is_refused() {
    let sb = Sandbox::new();
    std::fs::set_permissions(&sb.runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let line = sb.start_server_expect_error(&[]);
    assert!(line.contains("755") && line.contains("chmod 700"), "{line}");
    assert!(!sb.socket.exists());
}

#[tokio::test]
async fn second_server_on_the_same_socket_is_refused() {
    let sb = Sandbox::new();
    let first = sb.start_server(&[]);
    let cmd = sb.server_command(&["--lock-wait", "200ms"]);
    let (mut child, line) = spawn_with_ready(cmd).unwrap();
    let _ = child.wait();
    assert!(
        line.contains("another norgopolis server") && line.contains(&first.pid.to_string()),
        "{line}"
    );
}

#[tokio::test]
async fn status_load_unload_and_list() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let mut control = ControlClient::new(ch.clone());
    let list = control
        .list_modules(norgopolis_proto::v1::ListModulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.modules.iter().any(|m| m.name == "echo" && !m.loaded),
        "{list:?}"
    );

    let loaded = control
        .load(norgopolis_proto::v1::LoadRequest {
            name: "echo".into(),
            path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let pid = loaded.module.unwrap().pid;
    call_all(&ch, "echo", "echo", Value::Nil).await.unwrap();
    let s = status(&ch).await;
    let m = s
        .modules
        .iter()
        .find(|m| m.name == "echo")
        .expect("echo in status");
    assert_eq!(
        (m.pid, m.state.as_str(), m.calls_served),
        (pid, "running", 1)
    );
    assert_eq!(s.version, norgopolis_common::VERSION);

    let unloaded = control
        .unload(norgopolis_proto::v1::UnloadRequest {
            name: "echo".into(),
        })
        .await
        .unwrap();
    assert!(unloaded.into_inner().was_loaded);
    assert!(
        wait_pid_exit(pid, Duration::from_secs(1)).await,
        "unloaded module still running"
    );
    let err = control
        .unload(norgopolis_proto::v1::UnloadRequest {
            name: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn silent_session_is_dropped_after_client_timeout() {
    let sb = Sandbox::new();
    let mut server = sb.start_server(&["--client-timeout", "300ms", "--linger", "50ms"]);
    let ch = sb.channel().await.unwrap();
    // Our raw session never pings.
    let mut session = attach(&ch, true).await.unwrap();
    let msg = session.inbound.next().await.unwrap().unwrap();
    match msg.kind {
        Some(server_message::Kind::Goodbye(g)) => assert!(g.reason.contains("keepalive"), "{g:?}"),
        other => panic!("expected Goodbye, got {other:?}"),
    }
    assert!(
        server.exited_within(Duration::from_secs(3)).await,
        "silent session kept the server"
    );
}

#[tokio::test]
async fn pinging_client_keeps_its_session() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&["--keepalive-interval", "100ms", "--client-timeout", "300ms"]);
    let client = norgopolis_client::Client::connect(
        norgopolis_client::ConnectOptions::new("rust")
            .socket(&sb.socket)
            .spawn(false),
    )
    .await
    .unwrap();
    let mut events = client.subscribe();
    // Ten client timeouts pass; the session must survive them all.
    let outcome = tokio::time::timeout(Duration::from_secs(3), events.recv()).await;
    assert!(outcome.is_err(), "session event while idle: {outcome:?}");
    assert!(client.is_attached());
    assert_eq!(client.status().await.unwrap().sessions, 1);
}

#[tokio::test]
async fn bad_command_line_reaches_the_readiness_pipe() {
    let sb = Sandbox::new();
    let line = sb.start_server_expect_error(&["--linger", "soon"]);
    assert!(
        line.starts_with("error ") && line.contains("soon"),
        "{line}"
    );
}

#[tokio::test]
async fn bad_config_file_is_refused_naming_file_and_key() {
    let sb = Sandbox::new();
    let config = sb.dir.path().join("config.toml");
    std::fs::write(&config, "linger = \"3s\"\nmodule_dirs = [\"/x\"]\n").unwrap();
    let line = sb.start_server_expect_error(&[]);
    assert!(
        line.contains("config.toml") && line.contains("module_dirs"),
        "{line}"
    );
}
