//! Trust on a shared machine (issue 11): a client hands nothing to a
//! server it cannot trust (an unsafe runtime dir, a listener of another
//! uid), the server keeps its socket while it runs and never unlinks
//! another user's, and commands run by another user fail clearly.
//!
//! Other users are played by uid 65534 ("nobody"), so most of these need
//! root (the machine runs tests as root); without it they say so and pass.
//! Linux only: the fake servers of another uid use Linux's per-thread
//! `setresuid` and `SOCK_CLOEXEC`.
#![cfg(target_os = "linux")]

use std::{
    io::Read,
    os::{
        fd::OwnedFd,
        unix::{fs::PermissionsExt, net::UnixListener, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

mod support;

use norgopolis_client::{Client, ClientError, ConnectOptions};
use norgopolis_tests::*;
use rmpv::Value;

const NOBODY: u32 = 65534;
const LONG: Duration = Duration::from_secs(30);
/// For a server expected to refuse: should it start, it still ends soon.
const NOT_FOR_LONG: &[&str] = &["--idle-timeout", "2s"];

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to act as another user");
    }
    root
}

/// A stand-in server that never answers: it only counts what it is sent.
struct FakeServer {
    listener: UnixListener,
}

impl FakeServer {
    /// Binds `path` as ourselves and listens as `listen_as`: the kernel
    /// reports a listener's credentials as they were at `listen()`.
    fn start(path: &Path, listen_as: Option<u32>) -> Self {
        use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &nix::sys::socket::UnixAddr::new(path).expect("address"),
        )
        .expect("bind");
        // A thread of its own changes uid: the raw system call (unlike
        // libc's wrapper) changes only the calling thread's credentials.
        let fd: OwnedFd = std::thread::spawn(move || {
            if let Some(uid) = listen_as {
                // SAFETY: a plain system call on this thread's credentials.
                let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
                assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
            }
            listen(&fd, Backlog::new(16).expect("backlog")).expect("listen");
            fd
        })
        .join()
        .expect("listener thread");
        FakeServer {
            listener: UnixListener::from(fd),
        }
    }

    /// Bytes received on each connection made so far (their clients have
    /// gone, so each is read to its end).
    fn connections(&self) -> Vec<usize> {
        self.listener.set_nonblocking(true).expect("nonblocking");
        let mut received = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    stream.set_read_timeout(Some(LONG)).expect("timeout");
                    let mut bytes = Vec::new();
                    let _ = stream.read_to_end(&mut bytes);
                    received.push(bytes.len());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return received,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// A private (0700) directory `name` under `root`.
fn private_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    norgopolis_common::places::ensure_private_dir(&dir).expect("private dir");
    dir
}

/// A "server binary" that only leaves a mark if run: (binary, mark).
fn marking_server(root: &Path) -> (PathBuf, PathBuf) {
    let mark = root.join("spawned");
    let bin = root.join("fake-server");
    std::fs::write(&bin, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, mark)
}

/// Options for `socket` with the [`marking_server`].
fn marked_options(root: &Path, socket: &Path) -> (ConnectOptions, PathBuf) {
    let (bin, mark) = marking_server(root);
    let opts = ConnectOptions::new("test")
        .client_name("trust-tests")
        .socket(socket)
        .server_binary(&bin)
        .spawn_timeout(Duration::from_secs(10));
    (opts, mark)
}

/// Connects as a client would; the error it must end with.
async fn refusal(opts: ConnectOptions) -> ClientError {
    match Client::connect(opts).await {
        Ok(c) => panic!("connected to an untrusted server (pid {})", c.server_pid()),
        Err(e) => e,
    }
}

/// A copy of the CLI that other users can run.
fn cli_for_others(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = dir.join("norgopolis");
    std::fs::copy(bin("norgopolis"), &cli).unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    cli
}

/// Runs `cli args` as `uid` with only `env`; retries while the fresh copy
/// is busy ("Text file busy": a process forked meanwhile by another test
/// thread holds its write descriptor until it execs).
fn run_as(cli: &Path, uid: u32, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut tries = 0;
    loop {
        let mut cmd = Command::new(cli);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .uid(uid)
            .gid(NOBODY)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.expect("run the CLI"),
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_runtime_dir_open_to_others_is_refused_before_a_byte_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = private_dir(tmp.path(), "xdg");
    let rt = private_dir(&xdg, "norgopolis");
    let fake = FakeServer::start(&rt.join("norgopolis.sock"), None);
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (server, mark) = marking_server(tmp.path());

    // The default place: $XDG_RUNTIME_DIR/norgopolis.
    let out = Command::new(bin("norgopolis"))
        .args(["call", "echo", "echo", r#"{"password":"x"}"#])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", tmp.path())
        .env("XDG_RUNTIME_DIR", &xdg)
        .env("NORGOPOLIS_SERVER", &server)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the call went through");
    let err = stderr(&out);
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", rt.display())),
        "{err}"
    );
    assert_eq!(fake.connections(), Vec::<usize>::new());
    assert!(!mark.exists(), "a server was started");
}

#[tokio::test]
async fn a_symlinked_runtime_dir_is_refused_before_a_byte_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let real = private_dir(tmp.path(), "real");
    let fake = FakeServer::start(&real.join("s.sock"), None);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let (opts, mark) = marked_options(tmp.path(), &link.join("s.sock"));
    let err = refusal(opts).await;
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fake.connections(), Vec::<usize>::new());
    assert!(!mark.exists(), "a server was started");
}

#[tokio::test]
async fn a_runtime_dir_of_another_owner_is_refused_before_a_byte_is_sent() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = private_dir(tmp.path(), "theirs");
    let fake = FakeServer::start(&theirs.join("s.sock"), Some(NOBODY));
    nix::unistd::chown(&theirs, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();

    let (opts, mark) = marked_options(tmp.path(), &theirs.join("s.sock"));
    let err = refusal(opts).await;
    assert!(
        err.to_string().contains(&format!("owned by uid {NOBODY}")),
        "{err}"
    );
    assert_eq!(err.code_name(), "FailedPrecondition");
    assert_eq!(fake.connections(), Vec::<usize>::new());
    assert!(!mark.exists(), "a server was started");
}

#[tokio::test]
async fn a_fallback_dir_created_first_by_another_user_is_refused() {
    if !is_root() {
        return;
    }
    // A victim uid of its own per run, so that parallel runs do not meet
    // in /tmp; nobody plays the squatter.
    let victim = 60_000 + std::process::id() % 5_000;
    let fallback = PathBuf::from(format!("/tmp/norgopolis-{victim}"));
    let _ = std::fs::remove_dir_all(&fallback);
    std::fs::create_dir(&fallback).unwrap();
    std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o700)).unwrap();
    let squat = fallback.join("norgopolis.sock");
    let fake = FakeServer::start(&squat, Some(NOBODY));
    // The squatter lets the victim in.
    std::fs::set_permissions(&squat, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o777)).unwrap();
    nix::unistd::chown(&fallback, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let cli = cli_for_others(tmp.path());
    let out = run_as(
        &cli,
        victim,
        &[("NORGOPOLIS_SERVER", Path::new("/nonexistent"))],
        &["call", "echo", "echo", r#"{"password":"x"}"#],
    );
    let connections = fake.connections();
    let _ = std::fs::remove_dir_all(&fallback);
    assert!(!out.status.success(), "the call went through");
    let err = stderr(&out);
    assert!(err.contains(&fallback.display().to_string()), "{err}");
    assert!(err.contains(&format!("owned by uid {NOBODY}")), "{err}");
    assert_eq!(connections, Vec::<usize>::new());
}

#[tokio::test]
async fn a_listener_of_another_uid_in_a_private_dir_gets_zero_bytes() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = private_dir(tmp.path(), "rt");
    let socket = rt.join("s.sock");
    let fake = FakeServer::start(&socket, Some(NOBODY));

    let (opts, mark) = marked_options(tmp.path(), &socket);
    let err = refusal(opts).await;
    assert!(
        matches!(err, ClientError::ForeignServer { uid: NOBODY, .. }),
        "{err:?}"
    );
    assert_eq!(err.code_name(), "PermissionDenied");
    let msg = err.to_string();
    assert!(msg.contains(&format!("uid {NOBODY}")), "{msg}");
    assert!(msg.contains("nothing was sent"), "{msg}");
    // The client did connect (that is how it learns the uid), and sent
    // nothing at all on the connection.
    assert_eq!(fake.connections(), vec![0]);
    assert!(!mark.exists(), "a server was started");
}

#[tokio::test]
async fn a_modules_router_refuses_a_listener_of_another_uid() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let theirs = private_dir(sb.dir.path(), "theirs");
    let squat = theirs.join("s.sock");
    let fake = FakeServer::start(&squat, Some(NOBODY));
    // A module whose router socket points at the stranger's listener.
    support::script_module(
        &sb.modules,
        "relayer",
        "",
        &format!("export NORGOPOLIS_SOCKET='{}'", squat.display()),
    );
    let _server = sb.start_server_logged(&[]);
    let client = support::client(&sb).await;
    let relay = support::map(&[
        ("module", Value::from("echo")),
        ("function", Value::from("echo")),
        ("args", support::map(&[("password", Value::from("x"))])),
    ]);
    let err = client
        .call::<_, Value>("relayer", "relay", &relay)
        .await
        .expect_err("the relay went through");
    assert_eq!(err.code_name(), "PermissionDenied", "{err}");
    assert!(err.message().contains(&format!("uid {NOBODY}")), "{err}");
    assert_eq!(fake.connections(), vec![0]);
}

#[tokio::test]
async fn a_deleted_socket_is_bound_again_while_a_session_lasts() {
    let sb = Sandbox::new();
    let server = sb.start_server_logged(&[]);
    let (opts, _) = marked_options(sb.dir.path(), &sb.socket);
    let opts = opts
        .server_binary(bin("norgopolis-server"))
        .server_arg("--log")
        .server_arg(sb.dir.path().join("spawned.log"));
    let first = Client::connect(opts.clone().spawn(false)).await.unwrap();

    std::fs::remove_file(&sb.socket).unwrap();
    // A client that finds no socket starts a server; that one finds the
    // lock held and the socket back, and leaves us to the first server.
    let next = Client::connect(opts).await.expect("reach the server again");
    assert_eq!(next.server_pid(), server.pid);
    let echoed: Vec<Value> = next.call("echo", "echo", &"again").await.unwrap();
    assert_eq!(echoed, vec![Value::from("again")]);
    let echoed: Vec<Value> = first.call("echo", "echo", &"still").await.unwrap();
    assert_eq!(echoed, vec![Value::from("still")]);
    let log = sb.log_text();
    assert!(log.contains("was deleted; bound it again"), "{log}");
}

#[tokio::test]
async fn a_stuck_server_without_its_socket_is_named_as_the_cause() {
    let sb = Sandbox::new();
    let mut server = sb.start_server_logged(&[]);
    let pid = nix::unistd::Pid::from_raw(server.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::fs::remove_file(&sb.socket).unwrap();

    let (opts, _) = marked_options(sb.dir.path(), &sb.socket);
    let opts = opts
        .server_binary(bin("norgopolis-server"))
        .server_arg("--log")
        .server_arg(sb.dir.path().join("spawned.log"))
        .spawn_timeout(Duration::from_secs(2));
    let err = refusal(opts.clone()).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("server (pid {})", server.pid)),
        "{msg}"
    );
    assert!(msg.contains("socket"), "{msg}");
    assert!(!msg.contains("did not report ready"), "{msg}");

    // Running again, it binds its socket again.
    eventually(LONG, "the socket to be back", || async {
        sb.socket.exists().then_some(())
    })
    .await;
    let client = Client::connect(opts.spawn(false)).await.expect("attach");
    assert_eq!(client.server_pid(), server.pid);
    drop(client);
    assert!(!server.exited_within(Duration::ZERO).await);
}

#[tokio::test]
async fn a_socket_of_another_user_is_never_unlinked() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    // Live: a listener of nobody's at our socket path.
    let fake = FakeServer::start(&sb.socket, Some(NOBODY));
    let line = sb.start_server_expect_error(NOT_FOR_LONG);
    assert!(line.starts_with("error "), "server started: {line:?}");
    assert!(line.contains(&format!("uid {NOBODY}")), "{line}");
    assert!(line.contains(&sb.socket.display().to_string()), "{line}");
    assert!(sb.socket.exists(), "the live socket was removed");
    // The server only looked: one connection, nothing sent.
    assert_eq!(fake.connections(), vec![0]);
    drop(fake);

    // Dead, but nobody's file.
    nix::unistd::chown(&sb.socket, Some(NOBODY.into()), None).unwrap();
    let line = sb.start_server_expect_error(NOT_FOR_LONG);
    assert!(line.contains(&format!("belongs to uid {NOBODY}")), "{line}");
    assert!(sb.socket.exists(), "the socket file was removed");
}

#[tokio::test]
async fn commands_from_another_user_fail_clearly() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let server = sb.start_server_logged(&[]);
    // Opened up so that nobody reaches the socket at all (as an adversary
    // with a careless setup would); the server would drop the connection.
    for dir in [sb.dir.path(), sb.runtime.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&sb.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cli = cli_for_others(tmp.path());
    for args in [&["shutdown"][..], &["status"][..]] {
        let out = run_as(&cli, NOBODY, &[("NORGOPOLIS_SOCKET", &sb.socket)], args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("no server running"),
            "{args:?}"
        );
        assert!(err.contains("owned by uid 0"), "{args:?}: {err}");
    }
    // The server is untouched.
    std::fs::set_permissions(&sb.runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let client = Client::connect(marked_options(sb.dir.path(), &sb.socket).0.spawn(false))
        .await
        .expect("attach");
    assert_eq!(client.server_pid(), server.pid);
}
