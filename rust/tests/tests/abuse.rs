//! Abuse from outside: garbage and truncated HTTP/2 on the socket, other
//! users, squatted runtime files, a thousand callers vanishing mid-stream,
//! the server killed under load, bad config, and the TCP listener's rules.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use futures::StreamExt;
use norgopolis_client::{Client, ConnectOptions};
use norgopolis_proto::{
    communication::{forwarder_client::ForwarderClient, Invocation},
    v1::{control_client::ControlClient, StatusRequest},
};
use norgopolis_tests::*;
use rmpv::Value;
use tonic::Code;

const LONG: Duration = Duration::from_secs(30);
const NOBODY: u32 = 65534;

fn count_args(n: u64, delay_ms: u64) -> Value {
    Value::Map(vec![
        ("n".into(), n.into()),
        ("delay_ms".into(), delay_ms.into()),
    ])
}

/// Writes `bytes` on a fresh connection and reads until the server closes
/// it; true if it did within the time limit.
fn server_drops(socket: &Path, bytes: &[u8], close_write: bool) -> bool {
    let mut s = StdUnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).expect("write");
    if close_write {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // SETTINGS, GOAWAY: read on to the close.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test]
async fn garbage_and_truncated_http2_are_dropped_and_the_server_carries_on() {
    let sb = Sandbox::new();
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    call_all(&ch, "echo", "echo", Value::Nil).await.unwrap();
    let fds = fd_count(server.pid);

    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut bad_frame = PREFACE.to_vec();
    // A SETTINGS frame header announcing 60 bytes, followed by only 6.
    bad_frame.extend_from_slice(&[0, 0, 60, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    let mut bad_headers = PREFACE.to_vec();
    bad_headers.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
                                                                 // HEADERS on stream 1 whose HPACK block is nonsense.
    bad_headers.extend_from_slice(&[0, 0, 4, 1, 5, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", junk, false),
        (
            "HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
        ),
        ("half a preface", PREFACE[..12].to_vec(), true),
        ("a truncated frame", bad_frame, true),
        ("a broken header block", bad_headers, false),
    ];
    for (what, bytes, close_write) in cases {
        let socket = sb.socket.clone();
        let dropped =
            tokio::task::spawn_blocking(move || server_drops(&socket, &bytes, close_write))
                .await
                .unwrap();
        assert!(dropped, "connection with {what} was not dropped");
        // The server still answers, on the connection it had.
        assert_eq!(
            call_all(&ch, "echo", "echo", Value::from(what))
                .await
                .unwrap(),
            vec![Value::from(what)],
            "after {what}"
        );
    }
    eventually(LONG, "the dropped connections' fds to close", || async {
        (fd_count(server.pid) <= fds).then_some(())
    })
    .await;
    assert_eq!(status(&ch).await.connections, 1);
}

/// Copies `np-probe` where `nobody` can run it.
fn probe_for_nobody(dir: &Path) -> PathBuf {
    let probe = dir.join("np-probe");
    std::fs::copy(bin("np-probe"), &probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    probe
}

/// Runs the probe as `nobody` against `socket`; returns (success, stderr).
fn probe_as_nobody(probe: &Path, socket: &Path) -> (bool, String) {
    let run = || {
        Command::new(probe)
            .arg("100")
            .env_clear()
            .env("NORGOPOLIS_SOCKET", socket)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .output()
    };
    // The copy was just written: a process forked meanwhile by another test
    // thread holds its write descriptor until it execs, and exec of the
    // copy fails with "Text file busy" until then. Brief and harmless.
    let mut tries = 0;
    let out = loop {
        match run() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other.expect("run probe as nobody"),
        }
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let sb = Sandbox::new();
    let server = sb.start_server_logged(&[]);
    let probe_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(probe_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = probe_for_nobody(probe_dir.path());

    // As set up: the private runtime dir keeps others from the socket.
    let (ok, err) = probe_as_nobody(&probe, &sb.socket);
    assert!(!ok, "nobody reached the server");
    assert!(
        err.contains("Permission denied") || err.contains("denied"),
        "{err}"
    );

    // Even with the directories and the socket opened up, the server checks
    // the peer's uid and drops the connection.
    for dir in [sb.dir.path(), sb.runtime.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&sb.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, err) = probe_as_nobody(&probe, &sb.socket);
    assert!(!ok, "nobody got through the peer check: {err}");
    let log = eventually(LONG, "the refusal in the log", || async {
        let log = sb.log_text();
        log.contains("refused connection from another user")
            .then_some(log)
    })
    .await;
    assert!(log.contains(&format!("uid={NOBODY}")), "{log}");
    // We still get in.
    let ch = sb.channel().await.unwrap();
    call_all(&ch, "echo", "echo", Value::Nil).await.unwrap();
    assert_eq!(status(&ch).await.sessions, 0);
    drop(server);
}

/// Starts a server on `socket`, expecting a refusal; returns its message.
fn refused(sb: &Sandbox, socket: &Path) -> String {
    let socket = socket.display().to_string();
    let line = sb.start_server_expect_error(&["--socket", &socket]);
    assert!(line.starts_with("error "), "server started: {line:?}");
    line
}

#[tokio::test]
async fn squatted_runtime_dirs_and_files_are_refused_and_never_followed() {
    let sb = Sandbox::new();
    let root = sb.dir.path();
    let elsewhere = root.join("elsewhere");
    norgopolis_common::places::ensure_private_dir(&elsewhere).unwrap();
    let victim = elsewhere.join("victim");
    std::fs::write(&victim, "precious").unwrap();

    // The runtime dir is a symlink to a private dir.
    let link_dir = root.join("link-rt");
    std::os::unix::fs::symlink(&elsewhere, &link_dir).unwrap();
    let msg = refused(&sb, &link_dir.join("s.sock"));
    assert!(msg.contains("symbolic link"), "{msg}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        1,
        "something was created through the symlink"
    );

    // The runtime dir belongs to someone else, or is open to others.
    let foreign = root.join("foreign-rt");
    norgopolis_common::places::ensure_private_dir(&foreign).unwrap();
    nix::unistd::chown(&foreign, Some(NOBODY.into()), None).ok();
    if nix::unistd::geteuid().is_root() {
        let msg = refused(&sb, &foreign.join("s.sock"));
        assert!(msg.contains("owned by uid 65534"), "{msg}");
    }
    let open = root.join("open-rt");
    norgopolis_common::places::ensure_private_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let msg = refused(&sb, &open.join("s.sock"));
    assert!(msg.contains("chmod 700"), "{msg}");

    // Files in a good runtime dir squatted by a symlink or a foreign file.
    let rt = root.join("rt2");
    norgopolis_common::places::ensure_private_dir(&rt).unwrap();
    let socket = rt.join("s.sock");
    let places = norgopolis_common::Places::for_socket(socket.clone());
    for (what, path) in [
        ("socket", places.socket.clone()),
        ("server lock", places.server_lock.clone()),
        ("pid file", places.pid_file.clone()),
    ] {
        // A symlink to the victim (in place of the lock file an earlier
        // refused start left, which is harmless).
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let msg = refused(&sb, &socket);
        assert!(
            msg.contains(&path.display().to_string()),
            "{what} symlink: {msg}"
        );
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{what} symlink was removed or replaced"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();
    }
    // A regular file where the socket goes.
    std::fs::write(&socket, "not a socket").unwrap();
    let msg = refused(&sb, &socket);
    assert!(msg.contains("not a socket"), "{msg}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not a socket");
    // Nothing was left behind by the refused starts.
    assert!(!places.pid_file.exists(), "pid file left behind");
}

#[tokio::test]
async fn a_thousand_callers_vanishing_mid_stream_leak_nothing() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_module = 1100\n");
    let server = sb.start_server(&[]);
    let ch = sb.channel().await.unwrap();
    let module = call_all(&ch, "echo", "pid", Value::Nil).await.unwrap()[0]
        .as_u64()
        .unwrap() as u32;
    let before = status(&ch).await;
    let server_fds = fd_count(server.pid);
    let module_fds = fd_count(module);

    const CONNECTIONS: usize = 50;
    const PER_CONNECTION: usize = 20;
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = sb.channel().await.unwrap();
        let calls = futures::future::join_all((0..PER_CONNECTION).map(|_| {
            let channel = channel.clone();
            async move {
                let mut s = call(&channel, "echo", "count", count_args(1_000_000, 1000))
                    .await
                    .unwrap();
                // Mid-stream: the first item is in.
                s.next().await.unwrap().unwrap();
                s
            }
        }))
        .await;
        held.push((channel, calls));
    }
    let busy = status(&ch).await;
    assert_eq!(
        busy.calls_in_flight as usize,
        CONNECTIONS * PER_CONNECTION,
        "not all calls were running"
    );
    assert_eq!(busy.connections as usize, CONNECTIONS + 1);

    // Half the callers reset their streams and then leave; the other half
    // drop their connections outright.
    for (i, (channel, calls)) in held.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(calls);
            drop(channel);
        } else {
            drop(channel);
            drop(calls);
        }
    }
    let after = eventually(LONG, "every call and connection to be let go", || async {
        let st = status(&ch).await;
        let echo = module_status(&st, "echo")?;
        (st.calls_in_flight == 0 && echo.calls_in_flight == 0 && st.connections == 1).then_some(st)
    })
    .await;
    eventually(LONG, "fds and tasks back to where they were", || async {
        let st = status(&ch).await;
        (fd_count(server.pid) <= server_fds && st.tasks <= before.tasks).then_some(())
    })
    .await;
    assert_eq!(fd_count(module), module_fds, "module fds changed");
    assert_eq!(
        module_status(&after, "echo").unwrap().pid,
        module,
        "the module was restarted"
    );
    assert_eq!(
        call_all(&ch, "echo", "echo", Value::from("still here"))
            .await
            .unwrap(),
        vec![Value::from("still here")]
    );
}

#[tokio::test]
async fn server_sigkill_under_100_streams_fails_the_calls_and_a_fresh_server_follows() {
    let sb = Sandbox::new();
    sb.write_config("max_calls_per_module = 200\n");
    let opts = ConnectOptions::new("rust")
        .client_name("abuse-test")
        .socket(&sb.socket)
        .server_binary(bin("norgopolis-server"))
        .server_args([
            "--modules-dir".into(),
            sb.modules.clone().into_os_string(),
            "--log".into(),
            sb.log.clone().into_os_string(),
            "--config".into(),
            sb.config_path().into_os_string(),
            "--linger".into(),
            std::ffi::OsString::from("60s"),
        ]);
    let client = Client::connect(opts.clone()).await.unwrap();
    let old_server = client.server_pid();
    // Each caller reads its stream as it comes, like a real front end.
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel(100);
    let mut callers = Vec::new();
    for _ in 0..100 {
        let long_count = count_args(1_000_000, 200);
        let call = client.invoke::<_, u64>("echo", "count", &long_count);
        let mut s = tokio::time::timeout(LONG, call)
            .await
            .expect("call did not start")
            .unwrap();
        let first_tx = first_tx.clone();
        callers.push(tokio::spawn(async move {
            let mut got_first = false;
            loop {
                match s.next().await {
                    Some(Ok(_)) if !got_first => {
                        got_first = true;
                        let _ = first_tx.send(()).await;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ok(e),
                    None => return Err("stream ended cleanly"),
                }
            }
        }));
    }
    for _ in 0..100 {
        tokio::time::timeout(LONG, first_rx.recv())
            .await
            .expect("a stream never produced its first item")
            .unwrap();
    }
    let modules = children_of(old_server);
    assert!(!modules.is_empty());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let ends = tokio::time::timeout(LONG, futures::future::join_all(callers))
        .await
        .expect("streams hung after the server died");
    assert!(
        ends.iter().all(|e| matches!(e, Ok(Ok(_)))),
        "a stream ended without an error"
    );
    for pid in &modules {
        assert!(
            wait_pid_exit(*pid, LONG).await,
            "module {pid} outlived the server"
        );
    }
    assert!(wait_pid_exit(old_server, LONG).await);
    drop(client);

    let fresh = Client::connect(opts).await.unwrap();
    assert_ne!(fresh.server_pid(), old_server);
    let echoed: Vec<String> = fresh.call("echo", "echo", &"again").await.unwrap();
    assert_eq!(echoed, vec!["again".to_string()]);
    fresh.shutdown("test over").await.unwrap();
}

#[tokio::test]
async fn config_errors_reach_the_spawning_client_with_file_line_and_key() {
    let sb = Sandbox::new();
    sb.write_config("linger = \"2s\"\nmax_sessions = \"lots\"\n");
    let opts = ConnectOptions::new("rust")
        .socket(&sb.socket)
        .server_binary(bin("norgopolis-server"))
        .server_args([
            "--modules-dir".into(),
            sb.modules.clone().into_os_string(),
            "--log".into(),
            sb.log.clone().into_os_string(),
            "--config".into(),
            sb.config_path().into_os_string(),
        ]);
    let err = Client::connect(opts).await.unwrap_err().to_string();
    let config = sb.config_path().display().to_string();
    assert!(err.contains(&config), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("key `max_sessions`"), "{err}");
    assert!(!sb.socket.exists(), "a server is listening anyway");

    // Run by hand, the server says the same and exits non-zero.
    let out = sb
        .server_command(&[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2, key `max_sessions`"), "{stderr}");
}

#[tokio::test]
async fn the_tcp_listener_refuses_other_addresses_at_start() {
    let sb = Sandbox::new();
    for addr in ["0.0.0.0:0", "192.168.1.1:62020", "[::]:0"] {
        let line = sb.start_server_expect_error(&["--listen-tcp", addr]);
        assert!(line.contains("not a loopback address"), "{addr}: {line}");
    }
    sb.write_config("\nlisten_tcp = \"0.0.0.0:62020\"\n");
    let line = sb.start_server_expect_error(&[]);
    assert!(
        line.contains("line 2, key `listen_tcp`") && line.contains("not a loopback address"),
        "{line}"
    );
    assert!(!sb.socket.exists());
}

#[tokio::test]
async fn the_tcp_listener_serves_the_forwarder_only() {
    let sb = Sandbox::new();
    let _server = sb.start_server(&["--listen-tcp", "127.0.0.1:0"]);
    let ch = sb.channel().await.unwrap();
    let addr = status(&ch).await.tcp_address;
    assert!(addr.starts_with("127.0.0.1:"), "{addr:?}");
    let tcp = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut items = ForwarderClient::new(tcp.clone())
        .forward(Invocation {
            module: "echo".into(),
            function_name: "count".into(),
            args: args(3.into()),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = vec![];
    while let Some(item) = items.next().await {
        got.push(value(&item.unwrap()));
    }
    assert_eq!(got, vec![Value::from(0), Value::from(1), Value::from(2)]);
    let err = ControlClient::new(tcp)
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}
