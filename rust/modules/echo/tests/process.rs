//! The built `echo` binary as the router runs it: a child process spoken to
//! over its stdin/stdout pipes with the real tonic client.

use std::{future::Future, process::Stdio, time::Duration};

use norgopolis_sdk::{
    rmpv::Value,
    testing::{self, call, invoke, Client},
    Code,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
};

/// Upper bound so that a broken test fails instead of hanging; never a
/// timing assertion.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test step did not finish")
}

/// A running echo process and a client connected to it.
struct Echo {
    child: Child,
    client: Client,
    /// Copies the client's bytes into the child's stdin; aborting it closes
    /// stdin (the router's way of asking a module to stop).
    stdin_pump: JoinHandle<()>,
    stderr_lines: mpsc::UnboundedReceiver<String>,
}

impl Echo {
    async fn start(env: &[(&str, &str)]) -> Echo {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo"));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("NORGOPOLIS_MODULE")
            .env_remove("NORGOPOLIS_SOCKET")
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn echo");
        let stdout = child.stdout.take().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stderr = child.stderr.take().unwrap();

        let (client_writes, mut pump_reads) = tokio::io::duplex(64 * 1024);
        let stdin_pump = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut pump_reads, &mut stdin).await;
        });
        let (lines_tx, stderr_lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = lines_tx.send(line);
            }
        });
        let client = within(testing::connect(stdout, client_writes))
            .await
            .expect("connect to echo");
        Echo {
            child,
            client,
            stdin_pump,
            stderr_lines,
        }
    }

    /// Closes the child's stdin and returns its exit code.
    async fn close_stdin_and_wait(mut self) -> Option<i32> {
        self.stdin_pump.abort();
        let _ = self.stdin_pump.await;
        within(self.child.wait()).await.unwrap().code()
    }

    async fn exit_code(mut self) -> Option<i32> {
        within(self.child.wait()).await.unwrap().code()
    }
}

async fn call_ok(c: &mut Client, function: &str, args: impl serde::Serialize) -> Vec<Value> {
    within(call(c, function, &args))
        .await
        .unwrap_or_else(|s| panic!("{function}: {s:?}"))
}

#[tokio::test]
async fn every_function_then_clean_exit_on_stdin_eof() {
    let mut echo = Echo::start(&[
        ("NORGOPOLIS_MODULE", "echo-under-test"),
        ("NORGOPOLIS_SOCKET", "/tmp/some.sock"),
    ])
    .await;
    let c = &mut echo.client;

    // echo: any value, exactly.
    let value = Value::Map(vec![
        (Value::from("nil"), Value::Nil),
        (Value::from("bin"), Value::Binary(vec![0, 255, 1])),
        (Value::from("ext"), Value::Ext(5, vec![1, 2])),
        (
            Value::from("nested"),
            Value::Map(vec![(Value::from(1), Value::Array(vec![Value::F64(2.5)]))]),
        ),
    ]);
    assert_eq!(call_ok(c, "echo", &value).await, vec![value]);
    assert_eq!(call_ok(c, "echo", Value::Nil).await, vec![Value::Nil]);
    let mut no_args = within(invoke::<()>(c, "echo", None)).await.unwrap();
    let item = within(no_args.message()).await.unwrap().unwrap();
    assert_eq!(item.data, vec![0xc0], "absent args echo as nil");

    // count: both argument forms.
    let ints = |r: std::ops::Range<u64>| r.map(Value::from).collect::<Vec<_>>();
    assert_eq!(call_ok(c, "count", 5u64).await, ints(0..5));
    assert_eq!(call_ok(c, "count", 0u64).await, ints(0..0));
    let opts = Value::Map(vec![
        (Value::from("n"), Value::from(3)),
        (Value::from("delay_ms"), Value::from(1)),
    ]);
    assert_eq!(call_ok(c, "count", opts).await, ints(0..3));
    let status = within(call(c, "count", &"three")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status
        .message()
        .contains("echo.count expects n or {n, delay_ms?, crash_after?, fail_after?}"));

    assert_eq!(call_ok(c, "sleep", 1u64).await, vec![Value::from(1)]);

    // fail: code by name or number.
    let fail = |code: Value, message: Option<&str>| {
        let mut m = vec![(Value::from("code"), code)];
        if let Some(msg) = message {
            m.push((Value::from("message"), Value::from(msg)));
        }
        Value::Map(m)
    };
    let status = within(call(
        c,
        "fail",
        &fail("NotFound".into(), Some("no such thing")),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "no such thing")
    );
    let status = within(call(c, "fail", &fail(14.into(), None)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "failed on request")
    );
    for bad in [
        Value::from("Bogus"),
        Value::from(0),
        Value::from(17),
        Value::from("Ok"),
    ] {
        let status = within(call(c, "fail", &fail(bad.clone(), None)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
    }

    // env, env_all, pid.
    assert_eq!(
        call_ok(c, "env", ()).await,
        vec![Value::from("echo-under-test")]
    );
    let all = call_ok(c, "env_all", ()).await;
    let map = all[0].as_map().expect("env_all returns a map");
    let get = |k: &str| {
        map.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("module"), Some(Value::from("echo-under-test")));
    assert_eq!(get("socket"), Some(Value::from("/tmp/some.sock")));
    assert_eq!(
        get("path"),
        Some(Value::from(std::env::var("PATH").unwrap()))
    );
    assert_eq!(
        call_ok(c, "pid", ()).await,
        vec![Value::from(echo.child.id().unwrap())]
    );

    // stderr: one line, forwarded as is.
    assert_eq!(
        call_ok(&mut echo.client, "stderr", "hello from echo").await,
        vec![Value::Nil]
    );
    loop {
        let line = within(echo.stderr_lines.recv()).await.expect("stderr line");
        if line == "hello from echo" {
            break;
        }
    }

    // big: n bytes, byte i = i % 256, well over tonic's 4 MiB default.
    let n = 5 * 1024 * 1024 + 3;
    let big = call_ok(&mut echo.client, "big", n).await;
    let bytes = big[0].as_slice().expect("binary");
    assert_eq!(bytes.len(), n);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == i as u8));

    // Unknown functions list the real ones.
    let status = within(call(&mut echo.client, "nope", &()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "module 'echo' has no function 'nope' (has: big, count, crash, echo, env, env_all, fail, pid, publish, relay, sleep, stderr)"
    );

    assert_eq!(echo.close_stdin_and_wait().await, Some(0));
}

#[tokio::test]
async fn env_is_nil_without_a_router() {
    let mut echo = Echo::start(&[]).await;
    assert_eq!(call_ok(&mut echo.client, "env", ()).await, vec![Value::Nil]);
    assert_eq!(echo.close_stdin_and_wait().await, Some(0));
}

#[tokio::test]
async fn relay_and_publish_need_a_router() {
    let mut echo = Echo::start(&[]).await;
    let relay = Value::Map(vec![
        (Value::from("module"), Value::from("echo")),
        (Value::from("function"), Value::from("echo")),
    ]);
    let publish = Value::Map(vec![(Value::from("topic"), Value::from("t"))]);
    for (function, args) in [("relay", relay), ("publish", publish)] {
        let status = within(call(&mut echo.client, function, &args))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{function}");
        assert!(
            status.message().contains("NORGOPOLIS_SOCKET is not set"),
            "{function}: {}",
            status.message()
        );
    }
    assert_eq!(echo.close_stdin_and_wait().await, Some(0));
}

#[tokio::test]
async fn stdin_eof_during_a_call_still_exits_cleanly() {
    let mut echo = Echo::start(&[]).await;
    let mut stream = within(invoke(&mut echo.client, "sleep", Some(&600_000u64)))
        .await
        .unwrap();
    // `invoke` returned, so the module has answered the call's headers: it
    // is running the call now.
    assert_eq!(echo.close_stdin_and_wait().await, Some(0));
    assert!(within(stream.message()).await.is_err(), "the call fails");
}

#[tokio::test]
async fn crash_exits_with_the_code_without_replying() {
    let mut echo = Echo::start(&[]).await;
    assert!(within(call(&mut echo.client, "crash", &7)).await.is_err());
    assert_eq!(echo.exit_code().await, Some(7));

    let mut echo = Echo::start(&[]).await;
    assert!(within(call(&mut echo.client, "crash", &())).await.is_err());
    assert_eq!(echo.exit_code().await, Some(3));
}

#[tokio::test]
async fn count_crash_after_delivers_exactly_k_items_then_dies() {
    // Repeated, with no delay: the crash races the writing of the last items,
    // which `Emitter::flush` must win every time.
    for (n, k) in [
        (10u64, 4u64),
        (10, 0),
        (5, 5),
        (3, 1),
        (100, 99),
        (50, 1),
        (20, 7),
        (8, 2),
    ] {
        let mut echo = Echo::start(&[]).await;
        let args = Value::Map(vec![
            (Value::from("n"), Value::from(n)),
            (Value::from("crash_after"), Value::from(k)),
        ]);
        let mut stream = within(invoke(&mut echo.client, "count", Some(&args)))
            .await
            .expect("call starts");
        let mut got = Vec::new();
        let end = loop {
            match within(stream.message()).await {
                Ok(Some(item)) => {
                    got.push(norgopolis_proto::msgpack::decode::<u64>(&item.data).unwrap())
                }
                Ok(None) => break None,
                Err(status) => break Some(status),
            }
        };
        assert_eq!(got, (0..k).collect::<Vec<_>>(), "n={n} k={k}");
        assert!(end.is_some(), "the stream must fail, not end (n={n} k={k})");
        assert_eq!(echo.exit_code().await, Some(101));
    }
}

#[tokio::test]
async fn count_crash_after_beyond_n_never_crashes() {
    let mut echo = Echo::start(&[]).await;
    let args = Value::Map(vec![
        (Value::from("n"), Value::from(3)),
        (Value::from("crash_after"), Value::from(4)),
    ]);
    assert_eq!(call_ok(&mut echo.client, "count", args).await.len(), 3);
    assert_eq!(echo.close_stdin_and_wait().await, Some(0));
}

#[tokio::test]
async fn sigterm_exits_cleanly_with_stdin_open() {
    let mut echo = Echo::start(&[]).await;
    assert_eq!(call_ok(&mut echo.client, "pid", ()).await.len(), 1);
    let pid = nix::unistd::Pid::from_raw(echo.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(echo.exit_code().await, Some(0));
}
