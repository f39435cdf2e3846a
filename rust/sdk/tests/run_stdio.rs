//! `Module::run` on real stdio, in a child process: this very binary run
//! again with `CHILD_ENV` set. There is no test harness here, because the
//! harness prints to stdout, and stdout is the protocol.
//!
//! Checks: a stray `println!` in a handler ends up on stderr instead of
//! corrupting the stream; stdin/stdout that are sockets rather than pipes
//! (the non-pipe fallback) work; EOF and SIGTERM end the process with 0.

use std::{
    future::Future,
    os::{fd::OwnedFd, unix::net::UnixStream as StdUnixStream},
    process::{ExitCode, Stdio},
    time::Duration,
};

use norgopolis_sdk::{
    rmpv::Value,
    testing::{call, connect, Client},
    Module,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr, Command},
};

const CHILD_ENV: &str = "NORGOPOLIS_SDK_TEST_CHILD";

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if std::env::var_os(CHILD_ENV).is_some() {
        return runtime.block_on(child_module().run());
    }
    runtime.block_on(async {
        eprintln!("check: stray stdout over pipes");
        stray_stdout_goes_to_stderr_over_pipes().await;
        eprintln!("check: sockets and EOF");
        sockets_work_and_eof_exits_cleanly().await;
        eprintln!("check: SIGTERM during a blocked socket read");
        sigterm_exits_while_a_socket_read_blocks().await;
    });
    eprintln!("run_stdio: 3 checks passed");
    ExitCode::SUCCESS
}

fn child_module() -> Module {
    Module::new("child").function("shout", |text: String| async move {
        println!("stray stdout: {text}");
        Ok(text.to_uppercase())
    })
}

/// Upper bound so that a broken check fails instead of hanging.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("check did not finish")
}

fn child_command() -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.env(CHILD_ENV, "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads stderr up to the `wanted` line; returns the rest, which the caller
/// keeps open like the router does (printing to a closed stderr panics).
async fn wait_for_line(stderr: ChildStderr, wanted: &str) -> Lines<BufReader<ChildStderr>> {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match within(lines.next_line()).await {
            Ok(Some(line)) if line == wanted => return lines,
            Ok(Some(_)) => continue,
            other => panic!("stderr ended before {wanted:?}: {other:?}"),
        }
    }
}

async fn shout(client: &mut Client) {
    let items = within(call(client, "shout", "hi")).await.expect("shout");
    assert_eq!(items, vec![Value::from("HI")]);
}

async fn exit_code(child: &mut Child) -> Option<i32> {
    within(child.wait()).await.expect("wait").code()
}

async fn stray_stdout_goes_to_stderr_over_pipes() {
    let mut child = child_command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut client = within(connect(stdout, stdin)).await.expect("connect");
    shout(&mut client).await;
    let _stderr = wait_for_line(stderr, "stray stdout: hi").await;
    // The stream survived the stray print.
    shout(&mut client).await;
    drop(client); // closes the child's stdin
    assert_eq!(exit_code(&mut child).await, Some(0));
}

/// A child whose stdin and stdout are one end of a socket pair.
fn spawn_on_socket() -> (Child, tokio::net::UnixStream) {
    let (ours, theirs) = StdUnixStream::pair().expect("socketpair");
    let theirs_too = theirs.try_clone().expect("dup");
    let mut cmd = child_command();
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_too)));
    let child = cmd.spawn().expect("spawn child");
    // The command holds its copies of the child's end until dropped.
    drop(cmd);
    ours.set_nonblocking(true).expect("nonblocking");
    let ours = tokio::net::UnixStream::from_std(ours).expect("register socket");
    (child, ours)
}

async fn sockets_work_and_eof_exits_cleanly() {
    let (mut child, ours) = spawn_on_socket();
    let stderr = child.stderr.take().unwrap();
    let (read, write) = ours.into_split();
    let mut client = within(connect(read, write)).await.expect("connect");
    shout(&mut client).await;
    let _stderr = wait_for_line(stderr, "stray stdout: hi").await;
    drop(client); // shuts the socket down: EOF on the child's stdin
    assert_eq!(exit_code(&mut child).await, Some(0));
}

async fn sigterm_exits_while_a_socket_read_blocks() {
    let (mut child, ours) = spawn_on_socket();
    let (read, write) = ours.into_split();
    let mut client = within(connect(read, write)).await.expect("connect");
    shout(&mut client).await;
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    assert_eq!(exit_code(&mut child).await, Some(0));
    drop(client);
}
