//! No peer can deny service to the owner (issue 11): floods of idle
//! connections on the TCP listener (from another user) and on the Unix
//! socket, connection caps and the error a peer over them gets, the
//! open-file limit, and the descriptors the TCP listener leaves alone.
//!
//! Floods come from `np-flood`, a separate process (run as uid 65534
//! "nobody" for the TCP listener, which any local user can reach). Servers
//! get a low open-file limit before they start, so that exhausting it
//! takes a thousand connections, not a million.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt as _},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt;
use norgopolis_tests::*;
use rmpv::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdout},
};
use tonic::{transport::Channel, Code};

/// Upper bound on any single wait, so a broken test fails instead of
/// hanging; never a timing assertion.
const WAIT: Duration = Duration::from_secs(30);
const NOBODY: u32 = 65534;
/// Connections a flood opens: more than the 1,024 descriptors a server
/// gets by default.
const FLOOD: usize = 1100;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Starts a foreground server (log in the sandbox) whose open-file limit
/// is `soft` (of at most `hard`) when it starts.
fn start_server_with_nofile(sb: &Sandbox, soft: u64, hard: u64, extra: &[&str]) -> ServerProc {
    let log = std::fs::File::create(&sb.log).expect("create log");
    let mut cmd = sb.server_command(extra);
    cmd.stderr(log);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ServerProc::start(cmd)
}

/// The soft and hard open-file limits of a process.
fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// A running `np-flood`.
struct Flood {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Keeps the copy `nobody` runs.
    _dir: Option<tempfile::TempDir>,
}

impl Flood {
    /// Opens `count` idle connections of `mode` to `target`, as `nobody`
    /// when `as_nobody` (from a copy of the binary that user can run).
    fn start(mode: &str, target: &str, count: usize, as_nobody: bool) -> Flood {
        let (program, dir) = if as_nobody {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let copy = dir.path().join("np-flood");
            std::fs::copy(bin("np-flood"), &copy).expect("copy np-flood");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            (copy, Some(dir))
        } else {
            (bin("np-flood"), None)
        };
        let child = spawn_flood(&program, mode, target, count, as_nobody);
        let mut child = child;
        let stdout = child.stdout.take().expect("flood stdout");
        Flood {
            child,
            lines: BufReader::new(stdout).lines(),
            _dir: dir,
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("np-flood answers")
            .expect("np-flood stdout")
            .expect("np-flood exited")
    }

    /// Waits for every connection attempt; returns how many opened.
    async fn opened(&mut self) -> usize {
        let line = self.line().await;
        number_after(&line, "opened ").unwrap_or_else(|| panic!("np-flood said {line:?}"))
    }

    /// (open, closed by the server) now.
    async fn report(&mut self) -> (usize, usize) {
        let stdin = self.child.stdin.as_mut().expect("flood stdin");
        stdin.write_all(b"report\n").await.expect("ask np-flood");
        let line = self.line().await;
        let open = number_after(&line, "open ");
        let closed = number_after(&line, "closed ");
        open.zip(closed)
            .unwrap_or_else(|| panic!("np-flood said {line:?}"))
    }

    /// Asks for reports until `done(open, closed)` holds (nothing announces
    /// the server's closing a connection but the flood's own count).
    async fn until(&mut self, what: &str, done: impl Fn(usize, usize) -> bool) -> (usize, usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (open, closed) = self.report().await;
            if done(open, closed) {
                return (open, closed);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {open} open, {closed} closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn_flood(program: &Path, mode: &str, target: &str, count: usize, as_nobody: bool) -> Child {
    let mut tries = 0;
    loop {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args([mode, target, &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if as_nobody {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        match cmd.spawn() {
            // A process forked meanwhile by another test thread may hold the
            // fresh copy's write descriptor until it execs.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.expect("spawn np-flood"),
        }
    }
}

fn number_after(line: &str, word: &str) -> Option<usize> {
    line.split(word)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One owner call on a fresh connection to the Unix socket (what a new
/// CLI or Neovim does); its latency, or what went wrong.
async fn owner_call(socket: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let call = async {
        let ch = connect(socket).await.map_err(|e| format!("connect: {e}"))?;
        call_all(&ch, "echo", "echo", Value::from("owner"))
            .await
            .map_err(|e| format!("{e}"))
    };
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(items)) if items == vec![Value::from("owner")] => Ok(start.elapsed()),
        Ok(Ok(items)) => Err(format!("wrong answer {items:?}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// Owner calls, one after another, while the flood opens its connections
/// and for `after` more calls once it has; panics on the first failure.
/// Returns (connections the flood opened, call latencies).
async fn owner_calls_through(
    flood: &mut Flood,
    socket: &Path,
    after: usize,
) -> (usize, Vec<Duration>) {
    let mut latencies = vec![];
    let opened = {
        let opened = flood.opened();
        tokio::pin!(opened);
        loop {
            tokio::select! {
                n = &mut opened => break n,
                call = owner_call(socket) => latencies.push(call.expect("owner call during the flood")),
            }
        }
    };
    for _ in 0..after {
        latencies.push(
            owner_call(socket)
                .await
                .expect("owner call under the flood"),
        );
    }
    (opened, latencies)
}

/// "p50 X ms, max Y ms over N calls".
fn describe(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, max {:.1} ms over {} calls",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1]),
        latencies.len()
    )
}

/// The server's TCP listener address.
async fn tcp_address(sb: &Sandbox) -> String {
    let ch = sb.channel().await.expect("connect");
    status(&ch).await.tcp_address
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_its_hard_limit() {
    let sb = Sandbox::new();
    let server = start_server_with_nofile(&sb, 256, 4096, &[]);
    assert_eq!(nofile_limits(server.pid), (4096, 4096));
    assert!(
        sb.log_text()
            .contains("raised the open-file limit from 256 to 4096"),
        "{}",
        sb.log_text()
    );
}

#[tokio::test]
async fn idle_http2_connections_from_another_user_on_tcp_do_not_cut_the_owner_off() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let sb = Sandbox::new();
    // Without the fix the server keeps this 1,024 and the flood exhausts it.
    let server = start_server_with_nofile(&sb, 1024, 4096, &["--listen-tcp", "127.0.0.1:0"]);
    let addr = tcp_address(&sb).await;

    let mut flood = Flood::start("http2", &addr, FLOOD, true);
    let (opened, mut latencies) = owner_calls_through(&mut flood, &sb.socket, 20).await;
    assert!(opened > 64, "the flood opened only {opened} connections");
    // The server holds at most max_tcp_connections (64) of them: the rest
    // were closed to make room, oldest first.
    let (open, closed) = flood
        .until("the flood's extra connections closed", |open, _| open <= 64)
        .await;
    let fds = fd_count(server.pid);
    assert!(fds < 64 + 64, "the server holds {fds} descriptors");
    assert_logged_once(&sb, "closing the oldest that started no call");
    eprintln!(
        "tcp flood from uid {NOBODY}: {opened} opened, {closed} closed by the server, {open} \
         held, server fds {fds}; owner calls on fresh connections: {}",
        describe(&mut latencies)
    );
}

#[tokio::test]
async fn the_tcp_listener_leaves_half_the_descriptors_to_the_owner() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let sb = Sandbox::new();
    // A cap far above the descriptors: only the reserve stands in the way.
    sb.write_config("max_tcp_connections = 60000\n");
    let server = start_server_with_nofile(&sb, 256, 256, &["--listen-tcp", "127.0.0.1:0"]);
    let addr = tcp_address(&sb).await;
    // The module's process first: its pipes, opened after a flood had filled
    // the TCP half, would count against the half checked below (the listener
    // stops at half; it cannot give back what the owner opens later).
    owner_call(&sb.socket)
        .await
        .expect("owner call before the flood");

    let mut flood = Flood::start("http2", &addr, 600, true);
    let (opened, mut latencies) = owner_calls_through(&mut flood, &sb.socket, 20).await;
    // The owner's last connections may still be closing.
    let fds = eventually(WAIT, "the server at half its descriptors", || async {
        let fds = fd_count(server.pid);
        (fds <= 128).then_some(fds)
    })
    .await;
    // A session and its calls need more than one connection at a time.
    let ch = sb.channel().await.expect("connect");
    let _session = attach(&ch, true).await.expect("attach during the flood");
    for _ in 0..5 {
        latencies.push(owner_call(&sb.socket).await.expect("owner call"));
    }
    assert_logged_once(&sb, "the rest is kept for the owner's socket");
    let (open, closed) = flood.report().await;
    eprintln!(
        "tcp flood under a 256-descriptor limit: {opened} opened, {open} held, {closed} closed, \
         server fds {fds}; owner calls: {}",
        describe(&mut latencies)
    );
}

#[tokio::test]
async fn lean_hello_only_connections_are_closed_after_the_first_call_deadline() {
    let sb = Sandbox::new();
    sb.write_config("first_call_timeout = \"2s\"\n");
    let server = start_server_with_nofile(&sb, 1024, 4096, &[]);
    let socket = sb.socket.display().to_string();

    let mut flood = Flood::start("lean", &socket, FLOOD, false);
    let started = Instant::now();
    let (opened, mut latencies) = owner_calls_through(&mut flood, &sb.socket, 20).await;
    // More than the socket's default cap of 1,024: some make room for others.
    assert!(opened > 1024, "the flood opened only {opened} connections");
    let (open, closed) = flood
        .until("every hello-only connection closed", |open, _| open == 0)
        .await;
    let all_closed = started.elapsed();
    eventually(WAIT, "the server's descriptors back down", || async {
        (fd_count(server.pid) < 64).then_some(())
    })
    .await;
    eprintln!(
        "lean flood: {opened} opened, {closed} closed ({open} left) within {:.1} s of the first; \
         owner calls: {}",
        all_closed.as_secs_f64(),
        describe(&mut latencies)
    );
}

/// A channel to `addr` over TCP.
async fn tcp_channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("tcp connect")
}

/// Starts a call that stays in flight (one item, then a minute's sleep)
/// and returns once the server has started it.
async fn busy(channel: &Channel) -> tonic::Streaming<norgopolis_proto::communication::MessagePack> {
    let args = Value::Map(vec![
        ("n".into(), 2.into()),
        ("delay_ms".into(), 60_000.into()),
    ]);
    let mut stream = call(channel, "echo", "count", args)
        .await
        .expect("busy call");
    let first = tokio::time::timeout(WAIT, stream.next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "busy call: {first:?}");
    stream
}

/// Asserts that a call on `channel` is refused for the cap set by `key`.
async fn assert_refused(channel: &Channel, key: &str) {
    let err = call_all(channel, "echo", "echo", Value::Nil)
        .await
        .expect_err("a connection over the cap was served");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(key), "{}", err.message());
}

/// Asserts that the server logged `text` exactly once (once per burst).
fn assert_logged_once(sb: &Sandbox, text: &str) {
    let log = sb.log_text();
    assert_eq!(
        log.matches(text).count(),
        1,
        "{text:?} not logged once per burst: {log}"
    );
}

#[tokio::test]
async fn a_peer_over_the_tcp_cap_gets_a_clear_error_and_the_owner_none() {
    let sb = Sandbox::new();
    sb.write_config("max_tcp_connections = 2\n");
    let _server = sb.start_server_logged(&["--listen-tcp", "127.0.0.1:0"]);
    let addr = tcp_address(&sb).await;

    let first = tcp_channel(&addr).await;
    let second = tcp_channel(&addr).await;
    let _a = busy(&first).await;
    let b = busy(&second).await;
    for _ in 0..3 {
        assert_refused(&tcp_channel(&addr).await, "max_tcp_connections").await;
    }
    owner_call(&sb.socket).await.expect("owner call");
    assert_logged_once(&sb, "refusing connections");
    // A place freed is a place for the next peer.
    drop(b);
    drop(second);
    eventually(WAIT, "a tcp call after a place was freed", || async {
        let ch = tcp_channel(&addr).await;
        call_all(&ch, "echo", "echo", Value::Nil).await.ok()
    })
    .await;
}

#[tokio::test]
async fn a_unix_socket_full_of_busy_connections_refuses_newcomers_by_name() {
    let sb = Sandbox::new();
    sb.write_config("max_connections = 16\n");
    let _server = sb.start_server_logged(&[]);
    let mut held = vec![];
    for _ in 0..16 {
        let ch = sb.channel().await.expect("connect");
        let call = busy(&ch).await;
        held.push((ch, call));
    }
    assert_refused(&sb.channel().await.expect("connect"), "max_connections").await;
    held.pop();
    eventually(WAIT, "a call once a place was freed", || async {
        owner_call(&sb.socket).await.ok()
    })
    .await;
}

#[test]
fn limits_out_of_range_stop_the_server_naming_the_key() {
    for (text, key) in [
        ("max_connections = 1\n", "max_connections"),
        ("max_tcp_connections = 0\n", "max_tcp_connections"),
        ("first_call_timeout = \"90m\"\n", "first_call_timeout"),
    ] {
        let sb = Sandbox::new();
        sb.write_config(text);
        let line = sb.start_server_expect_error(&[]);
        assert!(
            line.starts_with("error ") && line.contains(&format!("key `{key}`")),
            "{text:?}: {line}"
        );
        assert!(line.contains("out of range"), "{text:?}: {line}");
    }
}
