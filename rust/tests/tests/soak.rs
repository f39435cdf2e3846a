//! The soak (`make soak`, not part of `make test`): 8 clients × 25,000
//! mixed calls — echoes, streams, errors, cancels, larger results — through
//! the Rust client against one server. Zero unexpected errors, server RSS
//! growth under 2 MB and a flat fd count after warm-up, within a bounded
//! time. Prints the figures.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use norgopolis_client::{Client, Code, ConnectOptions};
use norgopolis_tests::*;
use serde::Serialize;
use support::{cli_callers, signal};

const CLIENTS: usize = 8;
const CALLS: usize = 25_000;
/// Calls per client before the baseline is taken (allocator and caches warm).
const WARMUP: usize = 2_500;
const TIME_LIMIT: Duration = Duration::from_secs(20 * 60);
const RSS_GROWTH_LIMIT_KIB: u64 = 2 * 1024;
/// CLI callers stopped with SIGSTOP in the stalls phase (more than the
/// module's 128 slots).
const STOPPED: usize = 150;
/// CLI callers killed mid-stream in the stalls phase.
const KILLED: usize = 300;
/// What vanished callers may leave behind in the server's RSS.
const RSS_LEFT_LIMIT_KIB: u64 = 16 * 1024;

#[derive(Serialize)]
struct Count {
    n: u64,
    delay_ms: u64,
}

#[derive(Serialize)]
struct Fail<'a> {
    code: &'a str,
    message: &'a str,
}

/// One call of the mix; returns an unexpected failure, if any.
async fn one_call(client: &Client, i: usize) -> Result<(), String> {
    match i % 10 {
        0..=4 => {
            let v: Vec<String> = client
                .call("echo", "echo", &format!("call {i}"))
                .await
                .map_err(|e| e.to_string())?;
            (v == [format!("call {i}")])
                .then_some(())
                .ok_or_else(|| format!("echo returned {v:?}"))
        }
        5 | 6 => {
            let v: Vec<u64> = client
                .call("echo", "count", &Count { n: 10, delay_ms: 0 })
                .await
                .map_err(|e| e.to_string())?;
            (v == (0..10).collect::<Vec<_>>())
                .then_some(())
                .ok_or_else(|| format!("count returned {v:?}"))
        }
        7 => match client
            .call::<_, ()>(
                "echo",
                "fail",
                &Fail {
                    code: "NotFound",
                    message: "expected",
                },
            )
            .await
        {
            Err(e) if e.is_code(Code::NotFound) => Ok(()),
            other => Err(format!("fail answered {other:?}")),
        },
        8 => {
            // Cancel: take the first item of a long stream and walk away.
            let mut s = client
                .invoke::<_, u64>(
                    "echo",
                    "count",
                    &Count {
                        n: 1_000_000,
                        delay_ms: 1,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            match s.next().await {
                Some(Ok(0)) => Ok(()),
                other => Err(format!("cancelled stream began with {other:?}")),
            }
        }
        _ => {
            let v: Vec<serde_bytes_like::Bytes> = client
                .call("echo", "big", &4096u64)
                .await
                .map_err(|e| e.to_string())?;
            (v.len() == 1 && v[0].0.len() == 4096)
                .then_some(())
                .ok_or_else(|| "big returned the wrong size".to_string())
        }
    }
}

/// Binary results as bytes, without another dependency.
mod serde_bytes_like {
    /// A MessagePack binary.
    pub struct Bytes(pub Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

struct Probe {
    rss_kib: u64,
    fds: usize,
    tasks: u64,
}

async fn probe(sb: &Sandbox, pid: u32) -> Probe {
    let ch = sb.channel().await.unwrap();
    let tasks = status(&ch).await.tasks;
    drop(ch);
    Probe {
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
        tasks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with `make soak`"]
async fn soak() {
    let sb = Sandbox::new();
    let server = sb.start_server(&[]);
    let opts = ConnectOptions::new("rust")
        .client_name("soak")
        .socket(&sb.socket)
        .spawn(false);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Client::connect(opts.clone()).await.unwrap());
    }
    let started = Instant::now();
    let start_probe = probe(&sb, server.pid).await;

    let run = |from: usize, to: usize| {
        let clients = clients.clone();
        async move {
            let mut errors = Vec::new();
            let results = futures::future::join_all(clients.iter().map(|c| async move {
                let mut bad = Vec::new();
                for i in from..to {
                    if let Err(e) = one_call(c, i).await {
                        bad.push(format!("call {i}: {e}"));
                    }
                }
                bad
            }))
            .await;
            for r in results {
                errors.extend(r);
            }
            errors
        }
    };

    let work = async {
        let mut errors = run(0, WARMUP).await;
        let warm = probe(&sb, server.pid).await;
        let warm_at = started.elapsed();
        errors.extend(run(WARMUP, CALLS).await);
        (errors, warm, warm_at)
    };
    let (errors, warm, warm_at) = tokio::time::timeout(TIME_LIMIT, work)
        .await
        .expect("soak did not finish in time");
    let elapsed = started.elapsed();
    // Cancelled calls finish on the server a moment after the caller left.
    let ch = sb.channel().await.unwrap();
    eventually(Duration::from_secs(30), "calls to drain", || async {
        (status(&ch).await.calls_in_flight == 0).then_some(())
    })
    .await;
    drop(ch);
    let end = probe(&sb, server.pid).await;

    let total = CLIENTS * CALLS;
    println!(
        "soak: {CLIENTS} clients x {CALLS} calls = {total} calls in {elapsed:.1?} ({:.0} calls/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("soak: mix per 10 calls: 5 echo, 2 stream of 10, 1 error, 1 cancel mid-stream, 1 4 KiB result");
    println!("soak: unexpected errors: {}", errors.len());
    println!(
        "soak: server RSS {} KiB at start, {} KiB after warm-up ({} calls, {warm_at:.1?}), {} KiB at end: growth {} KiB after warm-up",
        start_probe.rss_kib,
        warm.rss_kib,
        CLIENTS * WARMUP,
        end.rss_kib,
        end.rss_kib as i64 - warm.rss_kib as i64
    );
    println!(
        "soak: server fds {} at start, {} after warm-up, {} at end; tasks {} / {} / {}",
        start_probe.fds, warm.fds, end.fds, start_probe.tasks, warm.tasks, end.tasks
    );
    // The stalls phase reports its figures whatever the asserts below say.
    stalls_phase(&sb, server.pid).await;
    assert!(
        errors.is_empty(),
        "{} unexpected errors, first: {:?}",
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        end.rss_kib <= warm.rss_kib + RSS_GROWTH_LIMIT_KIB,
        "server RSS grew by {} KiB",
        end.rss_kib - warm.rss_kib
    );
    assert!(
        end.fds <= warm.fds,
        "fds grew from {} to {}",
        warm.fds,
        end.fds
    );
    assert!(
        end.tasks <= warm.tasks,
        "tasks grew from {} to {}",
        warm.tasks,
        end.tasks
    );
}

async fn echo_in_flight(ch: &tonic::transport::Channel) -> u32 {
    module_status(&status(ch).await, "echo").map_or(0, |m| m.calls_in_flight)
}

/// Server RSS once the vanished callers' calls have ended and (within a
/// bound) what they held has been given back.
async fn rss_after_callers_left(ch: &tonic::transport::Channel, pid: u32, before: u64) -> u64 {
    eventually(
        Duration::from_secs(60),
        "the callers' calls to end",
        || async { (echo_in_flight(ch).await == 0).then_some(()) },
    )
    .await;
    let settle = async {
        while rss_kib(pid) > before + RSS_LEFT_LIMIT_KIB {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), settle).await;
    rss_kib(pid)
}

/// Stopped callers (SIGSTOP, as a hung Neovim) of endless streams, then
/// callers killed mid-stream: a fresh call goes through beside the
/// stopped ones, and the server's memory comes back after both.
async fn stalls_phase(sb: &Sandbox, pid: u32) {
    let ch = sb.channel().await.unwrap();
    let before = rss_kib(pid);

    let stopped = cli_callers(sb, STOPPED, 10_000_000);
    eventually(
        Duration::from_secs(60),
        "the stopped callers' calls to run",
        || async { (echo_in_flight(&ch).await >= 128).then_some(()) },
    )
    .await;
    for child in &stopped.0 {
        signal(child.id(), libc::SIGSTOP);
    }
    let started = Instant::now();
    let fresh = tokio::time::timeout(
        Duration::from_secs(60),
        call_all(&ch, "echo", "echo", rmpv::Value::from(1)),
    )
    .await;
    let fresh_took = started.elapsed();
    let stopped_peak = rss_kib(pid);
    drop(stopped);
    let after_stopped = rss_after_callers_left(&ch, pid, before).await;

    let killed = cli_callers(sb, KILLED, 1_000_000);
    eventually(
        Duration::from_secs(60),
        "the killed callers' calls to run",
        || async { (echo_in_flight(&ch).await >= 128).then_some(()) },
    )
    .await;
    let killed_peak = rss_kib(pid);
    drop(killed);
    let after_killed = rss_after_callers_left(&ch, pid, before).await;

    println!(
        "soak: stalls: a fresh call beside {STOPPED} stopped callers took {fresh_took:.1?}; \
         server RSS {before} KiB before, {stopped_peak} KiB with them stopped, {after_stopped} KiB after they were killed"
    );
    println!(
        "soak: stalls: {KILLED} callers killed mid-stream: server RSS {killed_peak} KiB with them running, \
         {after_killed} KiB after (limit {} KiB above {before})",
        RSS_LEFT_LIMIT_KIB
    );
    let fresh = fresh.expect("a fresh call waited behind stopped callers");
    assert_eq!(fresh.unwrap(), vec![rmpv::Value::from(1)]);
    assert!(
        after_killed <= before + RSS_LEFT_LIMIT_KIB,
        "killed callers left {} KiB behind",
        after_killed - before
    );
}
